#!/usr/bin/env bash
# Quickstart 1: set up (once) and run the main job: raw text to a trained model and a report.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/bootstrap.sh" main
exec "$root/.venv/bin/llmlab" speedrun "$@"
