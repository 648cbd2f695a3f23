#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the bundled example dump.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash examples/run.sh
