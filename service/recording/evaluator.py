"""The evaluator process: shadow variants, disagreement counts and ledger writes, beside one worker.

Started by service/offload.py with one end of a socket pair; everything arrives as pickled messages
in order, so a barrier answered here means every job sent before it is recorded and committed. The
counts it makes (a :class:`Tally`) go back after every batch and are applied to the worker's metrics.
It has its own interpreter lock: its Python work never holds up the worker's event loop.

It stops when told to (after recording everything it was sent) and when the worker goes away (the
socket reads end-of-file): either way the ledger is flushed first.
"""

from __future__ import annotations

import logging
import pickle
import signal
import sys
import time
from collections import defaultdict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from service.ledger.store import Ledger
from service.recording.finisher import Finisher, Served, ShadowJob
from service.recording.wire import Decoded, decode
from service.runtime.repository import LoadedRepository, load
from service.settings import Settings

log = logging.getLogger("gateway.evaluator")
MAX_BATCH_MESSAGES = 16
"""Messages already waiting that are finished together (each is one gather window of requests)."""
KEEP_REPOSITORIES = 2
"""Versions kept loaded: the serving one and the previous one (jobs queued before a reload)."""


class Acc:
    """A counter that is read and reset with each report."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.total += amount


class Timer:
    """Latency observations kept until the next report."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen: list[float] = []

    def observe(self, amount: float) -> None:
        self.seen.append(amount)


class Tally:
    """What the finisher counted since the last report (the metrics.Children interface)."""

    def __init__(self) -> None:
        self.predictions: defaultdict[tuple[str, str], Acc] = defaultdict(Acc)
        self.disagreement: defaultdict[str, Acc] = defaultdict(Acc)
        self.compared: defaultdict[str, Acc] = defaultdict(Acc)
        self.dropped: defaultdict[str, Acc] = defaultdict(Acc)
        self.timers: dict[str, Timer] = {}
        self.jobs = 0

    def timer(self, name: str) -> Timer:
        return self.timers.setdefault(name, Timer())

    def report(self) -> dict[str, Any]:
        """Everything counted since the last report, as plain data; then start again from zero."""

        def take(counts: dict[Any, Acc]) -> dict[Any, float]:
            out = {k: a.total for k, a in counts.items() if a.total}
            counts.clear()
            return out

        doc = {
            "jobs": self.jobs,
            "predictions": take(self.predictions),
            "disagreement": take(self.disagreement),
            "compared": take(self.compared),
            "dropped": take(self.dropped),
            "inference": {n: t.seen for n, t in self.timers.items() if t.seen},
        }
        for t in self.timers.values():
            t.seen = []
        self.jobs = 0
        return doc


class Evaluator:
    """The process's state: loaded repositories, the ledger writer, the tally."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tally = Tally()
        self.repos: dict[str, LoadedRepository] = {}
        self.ledger = (
            Ledger(
                settings.ledger_path,
                settings.ledger_flush_interval_s,
                retention_s=settings.ledger_retention_s,
                max_unlabelled_rows=settings.ledger_max_unlabelled_rows,
            )
            if settings.ledger_enabled
            else None
        )
        self.finisher = Finisher(lambda: self.tally, lambda: self.ledger)

    def repo(self, path: str) -> LoadedRepository:
        repo = self.repos.get(path)
        if repo is None:
            s = self.settings
            repo = load(Path(path), s.providers, s.intra_op_threads)
            repo.timers = {n: self.tally.timer(n) for n in repo.timed}
            self.repos[path] = repo
            while len(self.repos) > KEEP_REPOSITORIES:
                del self.repos[next(iter(self.repos))]
        return repo

    def handle(self, requests: list[Decoded]) -> None:
        """Finish a batch: shadow work for the fresh requests, records for all of them."""
        now = time.monotonic()
        fresh: list[ShadowJob] = []
        late: list[ShadowJob] = []
        for r in requests:
            try:
                repo = self.repo(r.path)
            except Exception:  # the version vanished or broke since the worker loaded it
                log.exception("cannot load %s for %d queued rows", r.path, r.rows)
                self.tally.dropped["shadow_failed"].inc()
                continue
            job = ShadowJob(
                Served(r.request_id, r.variant, r.role, r.output, r.members, repo, r.rows), r.feeds, r.shadow
            )
            (late if r.shadow and r.deadline < now else fresh).append(job)
        self.finisher.settle(fresh, late)
        self.tally.jobs += len(requests)

    def flush(self) -> None:
        if self.ledger is not None:
            self.ledger.flush()

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()


def send(conn: Connection, message: tuple[Any, ...]) -> None:
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def receive(conn: Connection) -> tuple[Any, ...]:
    message: tuple[Any, ...] = pickle.loads(conn.recv_bytes())
    return message


def serve(conn: Connection) -> None:
    """Answer messages until told to stop or the worker is gone."""
    kind, settings = receive(conn)
    assert kind == "settings"
    evaluator = Evaluator(settings)
    try:
        stop = False
        while not stop:
            messages = [receive(conn)]
            # Everything already waiting makes one batch: fewer, larger onnxruntime runs when behind.
            while len(messages) < MAX_BATCH_MESSAGES and conn.poll(0):
                messages.append(receive(conn))
            jobs: list[Decoded] = []
            for message in messages:
                if message[0] == "jobs":
                    jobs.extend(decode(message[1], message[2]))
                    continue
                if jobs:  # in order: jobs sent before a barrier are finished before it is answered
                    evaluator.handle(jobs)
                    jobs = []
                if message[0] == "stop":
                    stop = True
                    break
                if message[0] == "load":
                    error = None
                    try:
                        evaluator.repo(message[2])
                    except Exception as exc:
                        error = str(exc)
                    send(conn, ("done", message[1], error))
                elif message[0] == "barrier":
                    evaluator.flush()
                    send(conn, ("tally", evaluator.tally.report()))
                    send(conn, ("done", message[1], None))
            if jobs:
                evaluator.handle(jobs)
            if evaluator.tally.jobs:
                send(conn, ("tally", evaluator.tally.report()))
    except EOFError:
        log.warning("the worker went away: flushing the ledger and stopping")
    finally:
        evaluator.close()
    try:
        send(conn, ("tally", evaluator.tally.report()))
        send(conn, ("closed",))
    except OSError:
        pass


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gateway-evaluator %(levelname)s %(message)s")
    # The worker decides when this process stops: a stop message after its last answer, or
    # end-of-file when it dies. Process managers signal a worker's children along with it (circus
    # sends SIGTERM down the tree before the worker's shutdown hook runs), and Ctrl-C reaches a whole
    # process group: either would lose the answers still on their way here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    serve(Connection(int(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
