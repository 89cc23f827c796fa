"""Child processes the CLI starts (gateway, Prometheus): own process group, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Managed:
    """A child process in its own session, so stopping it stops exactly what we started."""

    def __init__(
        self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as fh:
            self.process = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
            )

    def wait_http(self, url: str, timeout_s: float) -> None:
        """Until ``url`` answers 200; RuntimeError with the log's tail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def descendants(self) -> list[psutil.Process]:
        """Every process below ours; BentoML's workers run in sessions of their own, so a process-group
        signal does not reach them."""
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM the group (graceful: the gateway flushes its ledger), then SIGKILL whatever we
        started that is still alive, by PID."""
        if self.process.poll() is not None:
            return
        tree = self.descendants()
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        _reap(tree, timeout_s)

    def kill(self) -> None:
        """SIGKILL ours and everything below it at once (a crash, not a stop)."""
        tree = self.descendants()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        self.process.wait(timeout=10)
        _reap(tree, 10)


def _reap(tree: list[psutil.Process], timeout_s: float) -> None:
    """Wait for the given processes to end; SIGKILL the ones that do not."""
    _, alive = psutil.wait_procs(tree, timeout=timeout_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
