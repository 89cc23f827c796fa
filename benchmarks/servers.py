"""Servers under test and load generators as child processes: 127.0.0.1 only, free ports, each in its
own session (process group), stopped by PID (BentoML and MLServer workers included), and never left
running: every process started here is registered and stop_all() runs on exit, Ctrl-C and errors.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psutil

_STARTED: list[Server] = []
_LOCK = threading.Lock()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A child process in its own session, with its log file and the URL it answers on."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        log: Path,
        port: int,
        ready_path: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._fh = log.open("wb")
        self.process = subprocess.Popen(
            cmd, stdout=self._fh, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        self._known: dict[int, psutil.Process] = {}
        with _LOCK:
            _STARTED.append(self)

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Until GET ready_path answers 200; RuntimeError with the log's tail if it dies or times out."""
        deadline = time.monotonic() + timeout_s
        url = self.url + self.ready_path
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    self.tree()  # remember the workers now, to stop them by PID later
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def tree(self) -> list[psutil.Process]:
        """Our process and everything below it (remembered, so stop() finds workers whose parent died)."""
        try:
            root = psutil.Process(self.process.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in procs:
            self._known.setdefault(p.pid, p)
        return procs

    def rss_mb(self) -> float:
        """Resident memory of the whole process tree, MB (shared pages counted once per process)."""
        total = 0
        for p in self.tree():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return round(total / 2**20, 1)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by the process tree (living processes)."""
        total = 0.0
        for p in self.tree():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def worker_pid(self, marker: str) -> int:
        """The PID of the descendant whose command line contains ``marker`` (else the largest one)."""
        procs = self.tree()
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if marker in " ".join(p.cmdline()):
                    return p.pid
        best = max(procs, key=lambda p: p.memory_info().rss)
        return best.pid

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM our process group (graceful: the gateway flushes its ledger), then SIGKILL by PID
        whatever we started that is still alive."""
        tree = list({p.pid: p for p in [*self._known.values(), *self.tree()]}.values())
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass
        _, alive = psutil.wait_procs([p for p in tree if p.pid != self.process.pid], timeout=timeout_s)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        self._fh.close()
        with _LOCK:
            if self in _STARTED:
                _STARTED.remove(self)


def stop_all() -> None:
    """Stop every server still registered (in parallel: each may take a graceful flush)."""
    with _LOCK:
        servers = list(_STARTED)
    threads = [threading.Thread(target=s.stop) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)


def run_bounded(
    cmd: list[str], timeout_s: float, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """A short-lived helper process (load generator, profiler) in its own group, killed by PID if it
    outlives ``timeout_s`` or we are interrupted."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def ours_cpu_seconds() -> float:
    """CPU seconds of every server started here and of this process (the harness itself)."""
    with _LOCK:
        servers = list(_STARTED)
    t = psutil.Process().cpu_times()
    return t.user + t.system + sum(s.cpu_seconds() for s in servers)


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    t = psutil.cpu_times()
    return float(sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal")))


def children_cpu_seconds() -> float:
    """CPU seconds of this process's waited-for children (load generators and profilers)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class RssSampler:
    """Samples a server's tree RSS every ``interval_s`` in a thread; keeps the peak."""

    def __init__(self, server: Server, interval_s: float = 1.0) -> None:
        self.server = server
        self.interval_s = interval_s
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.rss_mb())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, self.server.rss_mb())
