#!/usr/bin/env bash
# The test suite: lint, types, then pytest (unit, in-process and real-server tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
echo "== ruff"; ruff check contract service builders cli tests monitoring benchmarks
echo "== mypy"; mypy
echo "== import-linter (architecture rules in pyproject.toml)"; lint-imports --no-cache
echo "== pytest"; python -m pytest "$@"
