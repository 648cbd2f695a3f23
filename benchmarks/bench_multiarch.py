"""Cross-architecture debugging timings (issue #15): per bundled example
(examples/kernel.gz + vmcore.0.gz for amd64, examples/<arch>/ for the others),
``kvm-open`` to the prompt and ``bt`` of every thread (``thread apply all bt``) in
gdb-multiarch, timed inside gdb (wall clock; the server's start, the connection and
the unwinding through kvm_dbg's rules included).

    python benchmarks/bench_multiarch.py [--repeat 3] [--arch ARCH ...]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PLUGIN = ROOT / "plugins" / "gdb" / "kvm_gdb.py"
ARCHES = ["amd64", "i386", "arm64", "arm", "riscv", "powerpc64", "powerpc", "mips"]

SCRIPT = """
set pagination off
set confirm off
source {plugin}
python
import time
def _t(label, cmd):
    t = time.perf_counter()
    out = gdb.execute(cmd, to_string=True)
    print("BENCH %s %.4f" % (label, time.perf_counter() - t))
    return out
_t("open", "kvm-open {kernel} {core}")
bt = _t("bt-all", "thread apply all bt")
print("BENCH frames %d" % sum(1 for ln in bt.splitlines() if ln.startswith("#")))
print("BENCH threads %d" % len(gdb.selected_inferior().threads()))
_t("close", "kvm-close")
end
"""


def run_gdb(gdb: str, kernel: Path, core: Path) -> Dict[str, float]:
    """One gdb-multiarch session: {label: seconds} plus frames and threads."""
    from kvm_dbg.debuggers import debugger_env
    with tempfile.NamedTemporaryFile("w", suffix=".gdb", delete=False) as f:
        f.write(SCRIPT.format(plugin=PLUGIN, kernel=kernel, core=core))
    try:
        out = subprocess.run([gdb, "-nx", "-q", "-batch", "-x", f.name], capture_output=True,
                             text=True, timeout=600, env=debugger_env()).stdout
    finally:
        os.unlink(f.name)
    res = {}
    for line in out.splitlines():
        if line.startswith("BENCH "):
            _, label, value = line.split()
            res[label] = float(value)
    if "bt-all" not in res:
        raise RuntimeError(f"gdb run failed:\n{out[-2000:]}")
    return res


def unpack(arch: str, into: Path) -> List[Path]:
    src = ROOT / "examples" if arch == "amd64" else ROOT / "examples" / arch
    out = []
    for name in ("kernel", "vmcore.0"):
        path = into / arch / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(src / f"{name}.gz") as f, open(path, "wb") as dst:
            shutil.copyfileobj(f, dst)
        out.append(path)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--arch", nargs="*", default=ARCHES, choices=ARCHES)
    args = ap.parse_args()
    gdb = shutil.which("gdb-multiarch")
    if not gdb:
        sys.exit("gdb-multiarch not found (scripts/bootstrap.sh installs it)")
    print(f"{'arch':<10} {'threads':>7} {'frames':>6}  {'kvm-open (s)':>22}  "
          f"{'bt of all threads (s)':>22}")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.arch:
            kernel, core = unpack(arch, Path(tmp))
            runs = [run_gdb(gdb, kernel, core) for _ in range(args.repeat)]
            cols = []
            for label in ("open", "bt-all"):
                vals = sorted(r[label] for r in runs)
                cols.append(f"median {vals[len(vals) // 2]:5.3f} max {vals[-1]:5.3f}")
            print(f"{arch:<10} {int(runs[0]['threads']):>7} {int(runs[0]['frames']):>6}  "
                  f"{cols[0]:>22}  {cols[1]:>22}")


if __name__ == "__main__":
    main()
