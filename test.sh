#!/usr/bin/env bash
# Quickstart 2: set up (once, with the test peers) and run the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/bootstrap.sh" test
cd "$root"
exec "$root/.venv/bin/python" -m pytest -n 2 -q "$@"
