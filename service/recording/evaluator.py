"""The evaluator process: shadow variants, disagreement counts and ledger writes, beside one worker.

Started by service/recording/process.py with one end of a socket pair; messages
(service/recording/messages.py) arrive in order, so a barrier answered here means every job sent
before it is recorded and committed. Its counts go back after every batch and are applied to the
worker's metrics. It has its own interpreter lock: its Python work never holds up the worker's loop.

It stops when told to (after recording everything it was sent) and when the worker goes away (the
socket reads end-of-file): either way the ledger is flushed first.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

from service.ledger.store import open_ledger
from service.recording.counts import EvaluatorCounts
from service.recording.finisher import Finisher
from service.recording.jobs import Job
from service.recording.messages import Barrier, Closed, Counts, Done, Jobs, Load, Start, Stop, receive, send
from service.recording.wire import decode
from service.runtime.repository import LoadedRepository, load
from service.settings import Settings

log = logging.getLogger("gateway.evaluator")


class Evaluator:
    """The process's state: loaded versions, the ledger writer, the counts since the last report."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.counts = EvaluatorCounts()
        self.repos: dict[str, LoadedRepository] = {}
        self.ledger = open_ledger(settings)
        self.finisher = Finisher(lambda: self.counts, lambda: self.ledger, self.repo)

    def repo(self, path: str) -> LoadedRepository:
        """The version folder's graphs, loaded on first use; the oldest beyond the kept ones go."""
        repo = self.repos.get(path)
        if repo is None:
            s = self.settings
            repo = load(Path(path), s.providers, s.intra_op_threads)
            repo.timers = {n: self.counts.timer(n) for n in repo.timed}
            self.repos[path] = repo
            while len(self.repos) > s.evaluator_keep_versions:
                del self.repos[next(iter(self.repos))]
        return repo

    def handle(self, jobs: list[Job]) -> None:
        """Finish a batch: shadow work for the fresh jobs, records for all of them."""
        now = time.monotonic()
        late = [j for j in jobs if j.shadow and j.deadline < now]
        fresh = [j for j in jobs if not (j.shadow and j.deadline < now)]
        self.finisher.settle(fresh, late)
        self.counts.jobs += len(jobs)

    def flush(self) -> None:
        if self.ledger is not None:
            self.ledger.flush()

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()


def run(conn: Connection) -> None:
    """Answer messages until told to stop or the worker is gone."""
    start = receive(conn)
    if not isinstance(start, Start):
        raise TypeError(f"expected Start first, got {type(start).__name__}")
    evaluator = Evaluator(start.settings)
    batch_messages = start.settings.evaluator_batch_messages
    try:
        stop = False
        while not stop:
            messages = [receive(conn)]
            # Everything already waiting makes one batch: fewer, larger onnxruntime runs when behind.
            while len(messages) < batch_messages and conn.poll(0):
                messages.append(receive(conn))
            jobs: list[Job] = []
            for message in messages:
                if isinstance(message, Jobs):
                    jobs.extend(decode(message.batch))
                    continue
                if jobs:  # in order: jobs sent before a barrier are finished before it is answered
                    evaluator.handle(jobs)
                    jobs = []
                if isinstance(message, Stop):
                    stop = True
                    break
                if isinstance(message, Load):
                    send(conn, Done(message.token, _load(evaluator, message.path)))
                elif isinstance(message, Barrier):
                    evaluator.flush()
                    send(conn, Counts(evaluator.counts.report()))
                    send(conn, Done(message.token))
            if jobs:
                evaluator.handle(jobs)
            if evaluator.counts.jobs:
                send(conn, Counts(evaluator.counts.report()))
    except EOFError:
        log.warning("the worker went away: flushing the ledger and stopping")
    finally:
        evaluator.close()
    try:
        send(conn, Counts(evaluator.counts.report()))
        send(conn, Closed())
    except OSError:
        pass


def _load(evaluator: Evaluator, path: str) -> str | None:
    try:
        evaluator.repo(path)
    except Exception as exc:  # reported to the worker, which logs it and serves on
        return str(exc)
    return None


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gateway-evaluator %(levelname)s %(message)s")
    # The worker decides when this process stops: a Stop after its last answer, or end-of-file when
    # it dies. Process managers signal a worker's children along with it (circus sends SIGTERM down
    # the tree before the worker's shutdown hook runs), and Ctrl-C reaches a whole process group:
    # either would lose the answers still on their way here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    run(Connection(int(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
