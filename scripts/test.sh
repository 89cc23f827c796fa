#!/usr/bin/env bash
# The test suite: lint, types, then pytest (unit, in-process and real-server tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
echo "== ruff"; ruff check service builders tests monitoring benchmarks
echo "== mypy"; mypy
echo "== pytest"; python -m pytest "$@"
