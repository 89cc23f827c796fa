"""One connection to the ledger's database, SQLite or PostgreSQL, behind the same few calls.

``GATEWAY_LEDGER_URL`` names it: ``sqlite:///relative/path``, ``sqlite:////absolute/path`` (the
default is the SQLite file GATEWAY_LEDGER_PATH) or ``postgresql://user@host:port/db`` (psycopg 3),
which several replicas share. The SQL is written once, with ``?`` placeholders; for PostgreSQL they
become ``%s``. What differs is here: how a transaction starts, how a lost database is noticed (a
SQLite file deleted or replaced under us; a PostgreSQL connection broken by a restart), and the schema
(service/ledger/schema.py), which carries a version and upgrades itself or refuses.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from service.ledger.schema import ensure_schema

log = logging.getLogger(__name__)
SQLITE = "sqlite"
POSTGRESQL = "postgresql"
URL_FORMS = "sqlite:///<path> or postgresql://<user>@<host>:<port>/<database>"


class LedgerUrlError(ValueError):
    """A ledger URL that names no database we can open."""


def parse_url(url: str) -> tuple[str, str]:
    """(kind, location): the SQLite file path, or the PostgreSQL conninfo URL."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if not path:
            raise LedgerUrlError(f"expected {URL_FORMS}, got {url!r} (no file path)")
        return SQLITE, path
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        parts = urlsplit(url)
        if not parts.hostname and "host=" not in parts.query:
            raise LedgerUrlError(f"expected {URL_FORMS}, got {redact(url)!r} (no host)")
        return POSTGRESQL, url
    raise LedgerUrlError(f"expected {URL_FORMS}, got {redact(url)!r}")


def redact(url: str) -> str:
    """The URL without its password, for logs and /health."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def as_url(target: str | Path) -> str:
    """A ledger URL from a URL or a SQLite file path."""
    text = str(target)
    return text if "://" in text else f"sqlite:///{Path(text)}"


def database_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a failed ledger statement raises (both drivers)."""
    import psycopg

    return (sqlite3.Error, psycopg.Error)


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class Database:
    """A ledger connection that the writer, the label store and /compare each hold one of.

    :meth:`check` before use notices a database that is gone (SQLite: the file at the path is no longer
    the one open, deleted or replaced by a restore; PostgreSQL: the connection broke, e.g. the server
    restarted) and opens it again, counted in ``reopened``."""

    def __init__(self, target: str | Path, max_bytes: int | None = None, lazy: bool = False) -> None:
        """``lazy``: a database that cannot be reached now is not an error here; the first use
        tries again (the writer starts degraded and retries instead of failing the worker)."""
        self.url = as_url(target)
        self.kind, self.location = parse_url(self.url)
        self.display = str(self.location) if self.kind == SQLITE else redact(self.url)
        self._max_bytes = max_bytes
        self.reopened = 0
        self._lost = False
        self.conn: Any = None
        self._identity: tuple[int, int] | None = None
        try:
            self._open()
        except database_errors() as exc:
            if not lazy:
                raise
            log.error(
                "ledger %s cannot be opened now (%s: %s); retrying on first use",
                self.display,
                failure_reason(exc),
                exc,
            )

    @property
    def path(self) -> Path:
        """The SQLite file (SQLite only)."""
        return Path(self.location)

    def _open(self) -> None:
        if self.kind == SQLITE:
            self.conn = _connect_sqlite(self.path)
            self._identity = _file_identity(self.path)
        else:
            import psycopg

            # autocommit: transactions are explicit (transaction()), reads take no lock
            self.conn = psycopg.connect(self.location, autocommit=True, connect_timeout=5)
        try:
            ensure_schema(self)
        except BaseException:
            self._close_quietly()
            raise
        if self.kind == SQLITE and self._max_bytes is not None:
            (page,) = self.conn.execute("PRAGMA page_size").fetchone()
            self.conn.execute(f"PRAGMA max_page_count={max(1, int(self._max_bytes) // int(page))}")

    def check(self) -> None:
        """Reopen a database that is gone (raises the driver's error when it cannot be reached)."""
        if self.conn is not None:
            if self.kind == SQLITE:
                now = _file_identity(self.path)
                if now is not None and now == self._identity:
                    return
                what = "deleted" if now is None else "replaced"
                log.warning(
                    "ledger %s was %s while open: reopening it (new rows go to the file now there)",
                    self.display,
                    what,
                )
            else:
                if not self.conn.closed and not self.conn.broken:
                    return
                log.warning("ledger %s: the connection was lost; connecting again", self.display)
            self._close_quietly()
            self._lost = True
        self._open()  # raises while the database cannot be reached; the next check tries again
        if self._lost:
            self.reopened += 1
            self._lost = False

    def _close_quietly(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None

    def sql(self, statement: str) -> str:
        return statement if self.kind == SQLITE else statement.replace("?", "%s")

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; the cursor (fetchone, fetchall, rowcount)."""
        if self.conn is None:
            self.check()
        if self.kind == SQLITE:
            return self.conn.execute(statement, params)
        return self.conn.execute(self.sql(statement), params)

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> Any:
        """Run one statement for many rows (pipelined on PostgreSQL); rowcount sums them."""
        if self.conn is None:
            self.check()
        if self.kind == SQLITE:
            return self.conn.executemany(statement, rows)
        cur = self.conn.cursor()
        cur.executemany(self.sql(statement), rows)
        return cur

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """A write transaction, rolled back on any error (nothing half-written). SQLite: BEGIN
        IMMEDIATE (one writer at a time, taken up front)."""
        if self.conn is None:
            self.check()
        if self.kind != SQLITE:
            with self.conn.transaction():
                yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            # SQLite rolls back by itself on some errors (SQLITE_FULL, I/O errors): a second ROLLBACK
            # would fail and hide the error that matters.
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[Database]:
        """Several reads that see one state of the database."""
        if self.conn is None:
            self.check()
        if self.kind != SQLITE:
            with self.conn.transaction():
                self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield self
            return
        self.conn.execute("BEGIN")
        try:
            yield self
        finally:
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self._close_quietly()


def _connect_sqlite(path: Path) -> sqlite3.Connection:
    """WAL and a busy timeout. (A ``max_bytes`` cap is SQLite's max_page_count, set after the schema:
    a write beyond it fails with "database or disk is full", as on a full disk.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


# SQLSTATEs of PostgreSQL failures that have a reason of their own
_PG_REASONS = {
    "53100": "ledger_full",  # disk_full
    "53200": "ledger_full",  # out_of_memory
    "25006": "ledger_read_only",  # read_only_sql_transaction (a standby, or default_transaction_read_only)
    "55P03": "ledger_locked",  # lock_not_available
    "40P01": "ledger_locked",  # deadlock_detected
    "40001": "ledger_locked",  # serialization_failure
    "57014": "ledger_locked",  # query_canceled (statement_timeout)
}


def failure_reason(exc: BaseException) -> str:
    """The unrecorded-rows reason for a failed ledger statement."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is not None or type(exc).__module__.startswith("psycopg"):
        if sqlstate in _PG_REASONS:
            return _PG_REASONS[sqlstate]
        import psycopg

        if isinstance(exc, psycopg.OperationalError) or (sqlstate or "").startswith(("08", "57P")):
            return "ledger_unreachable"  # connection refused or lost, server shutting down or restarted
        return "ledger_error"
    text = str(exc).lower()
    if "full" in text:
        return "ledger_full"
    if "readonly" in text or "read-only" in text:
        return "ledger_read_only"
    if "locked" in text or "busy" in text:
        return "ledger_locked"
    if "i/o" in text or "disk" in text:
        return "ledger_io_error"
    return "ledger_error"
