"""Time ``kvm-dbg triage`` on the bundled example (issue #7: under 1 s).

Measures the whole command as a user runs it (a fresh Python process:
interpreter start, imports, open, report), median of N runs.

    python benchmarks/bench_triage.py [--runs 5]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("kernel", "vmcore.0"):
            with gzip.open(ROOT / "examples" / f"{name}.gz") as src, \
                    open(os.path.join(tmp, name), "wb") as dst:
                shutil.copyfileobj(src, dst)
        cmd = [sys.executable, "-m", "kvm_dbg.cli", "triage", os.path.join(tmp, "kernel"),
               os.path.join(tmp, "vmcore.0")]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
            times.append(time.perf_counter() - t)
        assert "panic:     page fault" in out, out
        print(f"kvm-dbg triage on the bundled example: median {statistics.median(times):.3f} s, "
              f"min {min(times):.3f} s over {args.runs} runs (target < 1 s)")


if __name__ == "__main__":
    main()
