"""`gateway serve`: verify the repository, then run `bentoml serve` on the gateway service."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from pathlib import Path

SERVICE = "service.bento:EnsembleGateway"
SERVICE_NAME = "ensemble_gateway"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gateway serve`."""
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path("models"),
        help="repository root, model folder or version folder (default: newest in models/)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--admin-token", help="enables /admin/* (or set GATEWAY_ADMIN_TOKEN)")
    parser.add_argument("--ledger", type=Path, help="SQLite ledger path (or set GATEWAY_LEDGER_PATH)")
    parser.add_argument(
        "--ledger-url",
        help="the ledger's database, sqlite:///path or postgresql://user@host:port/db shared by replicas "
        "(or set GATEWAY_LEDGER_URL)",
    )


def server_env(
    repository: Path,
    workers: int,
    admin_token: str | None = None,
    ledger: Path | None = None,
    base: dict[str, str] | None = None,
    ledger_url: str | None = None,
) -> dict[str, str]:
    """Environment for a `bentoml serve` child process of the gateway: GATEWAY_* names come from the
    settings object (service.settings.environment), never written by hand."""
    from service.settings import Settings, environment

    env = dict(os.environ if base is None else base)
    values: dict[str, object] = {"repository": repository.resolve()}
    if admin_token:
        values["admin_token"] = admin_token
    if ledger is not None:
        values["ledger_path"] = ledger.resolve()
    if ledger_url is not None:
        values["ledger_url"] = ledger_url
    env.update(environment(**values))
    # `bentoml serve` wipes $BENTOML_HOME/prometheus_multiproc_dir when it starts, so two gateways
    # sharing a home would zero or mix each other's counters: each ledger gets its own home.
    variable = next(iter(environment(ledger_path=Path("x"))))
    ledger_path = Path(env.get(variable) or Settings.model_fields["ledger_path"].default).resolve()
    env.setdefault("BENTOML_HOME", str(ledger_path.parent / f".bentoml-{ledger_path.stem}"))
    env["BENTOML_CONFIG_OPTIONS"] = f"services.{SERVICE_NAME}.workers={workers}"
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    return env


def server_command(host: str, port: int) -> list[str]:
    """The `bentoml serve` command line (run from the project root)."""
    bentoml = Path(sys.executable).with_name("bentoml")
    return [str(bentoml), "serve", SERVICE, "--host", host, "--port", str(port)]


def port_problem(host: str, port: int) -> str | None:
    """Why `bentoml serve` could not listen on host:port (taken, or not an address here), or None."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"--host {host}: not an address ({exc.strerror})"
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the server will: SO_REUSEADDR, so only a listening socket (not TIME_WAIT) is a conflict.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"--port {port}: {host}:{port} is in use (another server, or an orphaned worker?)"
            return f"--port {port}: cannot listen on {host}:{port} ({exc.strerror})"
    return None


def settings_problem(admin_token: str | None) -> str | None:
    """The first invalid GATEWAY_* setting in this environment, in one line, or None."""
    from pydantic import ValidationError

    from service.settings import ENV_PREFIX, Settings

    if admin_token is not None and not admin_token.strip():
        return "--admin-token: blank; give a token or leave the flag out to keep the admin API closed"
    try:
        Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ENV_PREFIX + "_".join(str(p) for p in first["loc"]).upper()
        return f"{name}: {first['msg']}"
    return None


def ledger_problem(ledger_url: str | None) -> str | None:
    """Why the ledger database named by --ledger-url or GATEWAY_LEDGER_URL cannot be used (a bad URL,
    a PostgreSQL server that does not answer, a schema newer than this gateway), or None. A SQLite
    file is created by the server itself."""
    from service.ledger.database import (
        POSTGRESQL,
        Database,
        LedgerUrlError,
        database_errors,
        parse_url,
        redact,
    )
    from service.ledger.schema import LedgerSchemaError
    from service.settings import Settings

    url = ledger_url or Settings().ledger_url
    if url is None:
        return None
    flag = "--ledger-url" if ledger_url else "GATEWAY_LEDGER_URL"
    try:
        if parse_url(url)[0] != POSTGRESQL:
            return None
        Database(url).close()
    except (LedgerUrlError, LedgerSchemaError) as exc:
        return f"{flag}: {exc}"
    except database_errors() as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"{flag}: cannot open {redact(url)} ({text})"
    return None


def run(args: argparse.Namespace) -> int:
    """Verify (exit 2 with one line on a bad repository), then replace this process with bentoml."""
    from contract.verify import RepositoryError
    from service.runtime.repository import load

    if args.workers < 1:
        print(f"gateway serve: error: --workers: expected at least 1, got {args.workers}", file=sys.stderr)
        return 2
    problem = (
        settings_problem(args.admin_token)
        or port_problem(args.host, args.port)
        or ledger_problem(getattr(args, "ledger_url", None))
    )
    if problem:
        print(f"gateway serve: error: {problem}", file=sys.stderr)
        return 2
    try:
        repo = load(args.repository)
    except RepositoryError as exc:
        print(f"gateway serve: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"serving {repo.manifest.name} v{repo.manifest.version} from {repo.path} on http://{args.host}:{args.port}",
        flush=True,
    )
    env = server_env(repo.path, args.workers, args.admin_token, args.ledger, ledger_url=args.ledger_url)
    root = Path(__file__).resolve().parent.parent
    os.chdir(root)
    cmd = server_command(args.host, args.port)
    os.execve(cmd[0], cmd, env)
    return 0  # pragma: no cover - execve does not return
