#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in .venv with pinned dependencies.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again: it reinstalls only when
# pyproject.toml or constraints.txt changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

stamp_value="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "setup: creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
if [[ "$(cat "$VENV/.stamp" 2>/dev/null || true)" != "$stamp_value" ]]; then
    echo "setup: installing pinned dependencies (constraints.txt)" >&2
    log="$(mktemp)"
    if ! { "$VENV/bin/python" -m pip install --quiet --upgrade pip \
           && "$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[tools,build,dev]"; } \
           >"$log" 2>&1; then
        grep -v "^WARNING: Location" "$log" >&2; rm -f "$log"
        echo "setup: pip install failed" >&2; exit 1
    fi
    rm -f "$log"
    echo "$stamp_value" > "$VENV/.stamp"
fi

# Debian packages the tests and the demo use (a real Prometheus server; PostgreSQL's server binaries
# for the shared-ledger tests, which start throw-away clusters of their own with initdb; Chromium;
# fortunes).
need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)  # the /ui page is tested in headless Chromium
# Debian's fortunes: the bundled text-classification table (`--dataset fortunes`, the text tests)
[[ -f /usr/share/games/fortunes/computers ]] || need_apt+=(fortunes)
if (( ${#need_apt[@]} )); then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing Debian packages: ${need_apt[*]}" >&2
        # No system cluster: the tests make their own (postgresql-common reads this before it creates one).
        mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/gateway-no-main.conf
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
        # The packages start system services; we run our own instances on free ports.
        (systemctl stop prometheus prometheus-node-exporter 2>/dev/null || service prometheus stop 2>/dev/null) || true
        (systemctl stop postgresql 2>/dev/null || service postgresql stop 2>/dev/null) || true
    else
        echo "setup: warning: ${need_apt[*]} missing and cannot apt-get install (not root)" >&2
    fi
fi
export PATH="$VENV/bin:$PATH"
