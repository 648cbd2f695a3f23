"""gdb front-end timings (issue #5): ``kvm-open`` to prompt, ``info threads``, ``bt``.

Runs a real gdb in batch mode with the plugin sourced and times each command
inside gdb (wall clock, server start and connection included) on:
the largest benchmark dump (4 GiB amd64 minidump, built by bench_read.py's
``build``), the real dumps (``--real-dir`` with kernel-<arch> and vmcore-*
files, e.g. as prepared by tests/realdumps.py), and a 2,000-thread dump from
``tests/fixturegen/kernelstate.build_threads``.  Targets:
kvm-open < 2 s, info threads (2,000 threads) < 2 s.

    python benchmarks/bench_gdb.py [--dir DIR] [--real-dir DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
PLUGIN = ROOT / "plugins" / "gdb" / "kvm_gdb.py"

SCRIPT = """
set pagination off
set confirm off
source {plugin}
python
import time
def _t(label, cmd, quiet):
    t = time.perf_counter()
    gdb.execute(cmd, to_string=quiet)
    print("BENCH %s %.4f" % (label, time.perf_counter() - t))
_t("open", "kvm-open {kernel} {core}", False)
_t("threads", "info threads", True)
_t("threads-again", "info threads", True)
_t("bt", "bt", True)
n = len(gdb.selected_inferior().threads())
print("BENCH nthreads %d" % n)
_t("close", "kvm-close", True)
end
"""


def run_gdb(gdb: str, kernel: str, core: str) -> Dict[str, float]:
    """One gdb session; {label: seconds} (plus nthreads)."""
    with tempfile.NamedTemporaryFile("w", suffix=".gdb", delete=False) as f:
        f.write(SCRIPT.format(plugin=PLUGIN, kernel=kernel, core=core))
    try:
        out = subprocess.run([gdb, "-nx", "-q", "-batch", "-x", f.name], capture_output=True,
                             text=True, timeout=600).stdout
    finally:
        os.unlink(f.name)
    res = {}
    for line in out.splitlines():
        if line.startswith("BENCH "):
            _, label, value = line.split()
            res[label] = float(value)
    if "open" not in res:
        raise RuntimeError(f"gdb run failed:\n{out[-2000:]}")
    return res


def report(name: str, gdb: str, kernel: str, core: str, repeat: int,
           targets: Dict[str, float]) -> None:
    runs: List[Dict[str, float]] = [run_gdb(gdb, kernel, core) for _ in range(repeat)]
    size = os.path.getsize(core) / (1 << 30)
    print(f"{name}: {int(runs[0].get('nthreads', 0))} threads, core {size:.2f} GiB")
    for label in ("open", "threads", "threads-again", "bt", "close"):
        vals = sorted(r[label] for r in runs if label in r)
        if not vals:
            continue
        target = targets.get(label)
        note = f"  (target < {target:.0f} s)" if target else ""
        print(f"  {label:<14} median {vals[len(vals) // 2]:7.3f} s   "
              f"min {vals[0]:7.3f} s   max {vals[-1]:7.3f} s{note}")


def large_dump(bench_dir: str) -> Optional[tuple]:
    from bench_read import build
    args = argparse.Namespace(dir=bench_dir, ram_gib=64, dumped_gib=4, arch="amd64")
    return build(args)


def thread_dump(tmp: str, nthreads: int) -> Tuple[str, str]:
    """(kernel, core) of a generated dump with ``nthreads`` threads."""
    from fixturegen.kernelstate import build_threads  # type: ignore[import-not-found]

    import kvm_dbg
    fx = build_threads(tmp, nthreads=nthreads)
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        got = len(kd.threads())
    if got < nthreads:
        raise RuntimeError(f"build_threads gave a dump with {got} threads, not {nthreads}")
    return fx.kernel_path, fx.core_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=os.environ.get("KVM_DBG_BENCH_DIR", "/tmp/kvm_dbg_bench"))
    ap.add_argument("--real-dir", help="directory with kernel-<arch> and vmcore-* (optional)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--nthreads", type=int, default=2000)
    args = ap.parse_args()
    gdb = shutil.which("gdb")
    if not gdb:
        sys.exit("gdb not found")
    kernel, core = large_dump(args.dir)
    report("large amd64 minidump", gdb, kernel, core, args.repeat, {"open": 2.0})
    if args.real_dir:
        for core in sorted(Path(args.real_dir).glob("vmcore-*")):
            arch = core.name.split("-")[1]
            kern = Path(args.real_dir) / f"kernel-{arch}"
            exe = gdb if arch in ("amd64", "i386") else shutil.which("gdb-multiarch")
            if kern.exists() and exe and core.suffix == "":
                report(core.name, exe, str(kern), str(core), args.repeat, {"open": 2.0})
    with tempfile.TemporaryDirectory() as tmp:
        kernel, core = thread_dump(tmp, args.nthreads)
        report(f"{args.nthreads}-thread dump", gdb, kernel, core, args.repeat,
               {"open": 2.0, "threads": 2.0})


if __name__ == "__main__":
    main()
