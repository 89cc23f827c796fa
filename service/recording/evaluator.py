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
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path

from service.ledger.entries import Entry
from service.ledger.store import open_ledger
from service.recording.counts import EvaluatorCounts
from service.recording.finisher import Finisher
from service.recording.jobs import Job
from service.recording.journal import evaluator_slot
from service.recording.messages import Barrier, Closed, Counts, Done, Jobs, Load, Start, Stop, receive, send
from service.recording.wire import decode
from service.runtime.repository import LoadedRepository, load
from service.settings import Settings

log = logging.getLogger("gateway.evaluator")


class Evaluator:
    """The process's state: loaded versions, the ledger writer, the counts since the last report."""

    def __init__(self, settings: Settings, journal: str | None = None) -> None:
        self.settings = settings
        self.resent: set[int] = set()
        """Batches the worker sent again after an evaluator died: their rows may be committed already."""
        self._slot = evaluator_slot(Path(journal)) if journal and settings.ledger_enabled else None
        self.counts = EvaluatorCounts()
        self.repos: dict[str, LoadedRepository] = {}
        self.ledger = open_ledger(settings, self._committed, self._unrecorded)
        self.finisher = Finisher(lambda: self.counts, lambda: self.ledger, self.repo)

    def _committed(self, entry: Entry, inserted: int) -> None:
        rows = entry.row_count
        if any(seq in self.resent for seq in entry.batches):
            # Sent again: rows already in the ledger were counted by the evaluator that wrote them.
            rows = inserted
        elif rows > inserted:
            with self.counts.lock:  # a request id answered twice keeps its first record
                self.counts.unrecorded["duplicate_id"].inc(rows - inserted)
        self._account(entry, rows)

    def _unrecorded(self, reason: str, entry: Entry) -> None:
        with self.counts.lock:
            self.counts.unrecorded[reason].inc(entry.row_count)
            self.counts.dropped[reason].inc(len(entry.request_ids))
        self._account(entry, entry.row_count)

    def _account(self, entry: Entry, rows: int) -> None:
        if self._slot is not None:
            self._slot.add(rows)
        self.counts.accounted(entry.batches)

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
        """Finish a batch: shadow work for the fresh jobs, records for all of them. Their batches are
        confirmed to the worker when the ledger has committed (or counted) every job."""
        now = time.monotonic()
        late = [j for j in jobs if j.shadow and j.deadline < now]
        fresh = [j for j in jobs if not (j.shadow and j.deadline < now)]
        batches = Counter(j.batch for j in jobs)
        self.counts.expect(batches)
        self.finisher.settle(fresh, late)
        if self.ledger is None:  # nothing to commit: finished is accounted for
            self.counts.accounted(batches)

    def report(self) -> Counts:
        return Counts(self.counts.report(self.ledger.health() if self.ledger is not None else None))

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
    evaluator = Evaluator(start.settings, start.journal)
    batch_messages = start.settings.evaluator_batch_messages
    try:
        stop = False
        while not stop:
            while not conn.poll(start.settings.ledger_flush_interval_s):
                if evaluator.counts.pending:  # commits made since the last message: say so now
                    send(conn, evaluator.report())
            messages = [receive(conn)]
            # Everything already waiting makes one batch: fewer, larger onnxruntime runs when behind.
            while len(messages) < batch_messages and conn.poll(0):
                messages.append(receive(conn))
            jobs: list[Job] = []
            for message in messages:
                if isinstance(message, Jobs):
                    if jobs and message.batch.resent != (jobs[-1].batch in evaluator.resent):
                        evaluator.handle(jobs)  # entries never mix batches sent again with fresh ones
                        jobs = []
                    if message.batch.resent:
                        evaluator.resent.add(message.batch.seq)
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
                    send(conn, evaluator.report())
                    send(conn, Done(message.token))
            if jobs:
                evaluator.handle(jobs)
            # Commits happen on the ledger's thread: what they confirmed goes back with the next message
            # (at the latest after the next gather window's batch, or the barrier).
            send(conn, evaluator.report())
    except EOFError:
        log.warning("the worker went away: flushing the ledger and stopping")
    finally:
        evaluator.close()
    try:
        send(conn, evaluator.report())
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
