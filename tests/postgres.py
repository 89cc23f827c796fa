"""A throw-away PostgreSQL cluster for tests and benchmarks: Debian's server binaries, `initdb` into a
temporary folder, on 127.0.0.1 and a free port, owned by a non-root user (the `postgres` account
when running as root: the server refuses to run as root), stopped by PID at the end."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL server's bin folder (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """One running cluster; ``url(db)`` gives a psycopg URL for a database in it."""

    def __init__(self, folder: Path, user: str = "gateway", fsync: bool = False) -> None:
        """``fsync``: off for tests (throw-away data, faster); on to measure as in production."""
        bin_dir = server_binaries()
        if bin_dir is None:
            raise RuntimeError(
                "PostgreSQL server binaries not found: scripts/setup.sh installs Debian's postgresql"
            )
        self.bin = bin_dir
        self.folder = folder
        self.data = folder / "data"
        self.port = _free_port()
        self.user = user
        self.log = folder / "postgres.log"
        self.fsync = fsync
        self._run_as: str | None = "postgres" if os.geteuid() == 0 else None
        folder.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            entry = pwd.getpwnam(self._run_as)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
            # the account must reach the folder through its parents (tmp folders are 0700 for root)
            for parent in folder.parents:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
        self._cmd([str(self.bin / "initdb"), "-D", str(self.data), "-U", user, "--auth=trust", "-E", "UTF8"])
        self.pid: int | None = None
        self.start()

    def _cmd(self, args: list[str], timeout: float = 120) -> None:
        if self._run_as:
            args = ["runuser", "-u", self._run_as, "--", *args]
        subprocess.run(args, check=True, capture_output=True, timeout=timeout)

    def start(self) -> None:
        """Start (or start again after stop/kill) on the same port and data folder."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder} "
            "-c max_connections=200" + ("" if self.fsync else " -c fsync=off -c full_page_writes=off")
        )
        self._cmd(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.log),
                "-w",
                "start",
            ]
        )
        self.pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop (fast: disconnects clients); what is left is killed by PID."""
        if self.pid is None:
            return
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._cmd([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None

    def kill(self) -> None:
        """The server killed -9 (as by the OOM killer); :meth:`start` recovers it."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(self.pid):
                time.sleep(0.05)
            self.pid = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
