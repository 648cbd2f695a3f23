"""Wall-clock seconds of ``kvm-dbg crashinfo`` as a whole process (interpreter start,
drgn import and DWARF indexing included), on the bundled example and on a 2,000-thread
fixture (tests/fixturegen/kernelstate.build_threads: 500 processes, 64 CPUs, stacks
with trap frames; its kernel has symbols but no DWARF, so the vmstat sections say so).
Each case runs with drgn and with ``--no-drgn``; the median of ``--repeat`` runs.

    python benchmarks/bench_crashinfo.py [--threads N] [--repeat R] [--kernel K --core C]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def run_once(kernel: str, core: str, *extra: str) -> float:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "kvm_dbg.cli", "crashinfo", *extra, kernel, core],
                       capture_output=True, cwd=ROOT)
    dt = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"crashinfo failed: {p.stderr.decode(errors='replace')}")
    return dt


def bench(label: str, kernel: str, core: str, repeat: int) -> None:
    for extra in ((), ("--no-drgn",)):
        times = [run_once(kernel, core, *extra) for _ in range(repeat)]
        mode = "with drgn" if not extra else "--no-drgn"
        print(f"{label:<34} {mode:<10} median {statistics.median(times):6.2f} s  "
              f"min {min(times):6.2f} s  ({repeat} runs)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--kernel")
    ap.add_argument("--core")
    args = ap.parse_args(argv)
    if args.kernel and args.core:
        bench(f"real dump {Path(args.core).name}", args.kernel, args.core, args.repeat)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-crashinfo-") as tmp:
        t = Path(tmp)
        for name in ("kernel", "vmcore.0"):
            with gzip.open(ROOT / "examples" / f"{name}.gz") as src, \
                    open(t / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        bench("example (amd64, DWARF)", str(t / "kernel"), str(t / "vmcore.0"), args.repeat)
        from fixturegen.kernelstate import build_threads
        fx = build_threads(str(t / "threads"), args.threads)
        bench(f"{args.threads}-thread fixture (amd64)", fx.kernel_path, fx.core_path,
              args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
