"""A worker outlives no supervisor: when the `bentoml serve` arbiter that started this worker dies
(even by kill -9, which it cannot forward), the worker is re-parented; a watchdog notices, stops
taking work, flushes what it holds (the ledger, the evaluator process) and exits. Without it an
orphan worker keeps answering on the port and a restart fails with "Address already in use"."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def watch_parent(on_orphaned: Callable[[], None], interval_s: float = 0.5) -> threading.Thread:
    """Call ``on_orphaned`` then end the process once the parent process has gone."""
    parent = os.getppid()

    def run() -> None:
        stop = threading.Event()
        while not stop.wait(interval_s):
            if os.getppid() != parent:
                log.error(
                    "supervisor (pid %d) is gone: flushing and exiting this worker (pid %d)",
                    parent,
                    os.getpid(),
                )
                try:
                    on_orphaned()
                finally:
                    # Not sys.exit (a daemon thread cannot end the process) and not a signal to
                    # ourselves (BentoML would wait for a supervisor that is not there).
                    os._exit(0)

    thread = threading.Thread(target=run, name="gateway-parent-watchdog", daemon=True)
    thread.start()
    return thread
