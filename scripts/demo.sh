#!/usr/bin/env bash
# The main job: build the default repository on a bundled dataset (if none exists), serve it,
# replay live traffic with delayed labels, and print the offline-vs-online comparison.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec gateway demo "$@"
