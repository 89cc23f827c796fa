"""Starting an evaluator process: its own session, one end of a socket pair, the worker's settings."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from service.recording.messages import Start, send
from service.settings import Settings

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass(eq=False)
class Child:
    """One evaluator process, the worker's end of its socket, and what it has confirmed."""

    proc: subprocess.Popen[bytes]
    conn: Connection
    sent: int = 0
    acked: int = 0
    closed: bool = False
    lost: bool = False
    reader: threading.Thread | None = field(default=None, repr=False)


def start_evaluator(settings: Settings, journal: Path | None = None) -> Child:
    """A new evaluator process (python -m service.recording.evaluator), sent its Start message."""
    ours, theirs = socket.socketpair()
    env = dict(os.environ)
    # Its counts come back as messages: it must not write multiprocess metric files of its own.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.recording.evaluator", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
            # Its own session: terminal signals go to the worker, which stops it in order.
            start_new_session=True,
        )
    finally:
        theirs.close()
    conn = Connection(ours.detach())
    send(conn, Start(settings, str(journal) if journal is not None else None))
    return Child(proc, conn)
