#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the default test suite: offline, CPU, slow tests excluded.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` for the long ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$#" -eq 0 ]; then set -- -m "not slow"; fi
exec .venv/bin/python -m pytest "$@"
