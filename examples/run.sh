#!/usr/bin/env bash
# The main job on the bundled example: decompress it, then report on it.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p work
for f in kernel vmcore.0; do
  [ -f "work/$f" ] || gzip -dc "$f.gz" > "work/$f"
done
../.venv/bin/kvm-dbg info work/kernel work/vmcore.0
