"""Opening a compressed minidump: first open (decompression into the cache)
against the ``zstd`` CLI on the same file, peak memory, and the second open
(cache hit).  Issue #12's figures.

Reuses bench_read.py's large amd64 model (a 64 GiB machine, 4 GiB of dumped
pages), compresses it once with ``zstd -3`` (kept beside it), then runs each
open in a fresh child process (so peak RSS is that open's alone):

    python benchmarks/bench_compressed.py [--dir DIR] [--dumped-gib 4] [--ram-gib 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[4])
import kvm_dbg
t = time.perf_counter()
kd = kvm_dbg.open(sys.argv[1], sys.argv[2], cache_dir=sys.argv[3], show_progress=False)
dt = time.perf_counter() - t
hz = kd.read_int(kd.symbol("hz"), 4)
print(json.dumps({"seconds": dt, "hit": kd.source.cache_hit, "hz": hz,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def child_open(kernel: str, core: str, cache: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, kernel, core, cache, str(ROOT)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=os.environ.get("KVM_DBG_BENCH_DIR", "/tmp/kvm_dbg_bench"))
    ap.add_argument("--ram-gib", type=int, default=64)
    ap.add_argument("--dumped-gib", type=int, default=4)
    args = ap.parse_args()
    import bench_read
    if not (bench_read._fixture_dir(argparse.Namespace(arch="amd64", **vars(args)))
            / "done").exists():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_read.py"),
                        "--build-only", "--dir", args.dir, "--ram-gib", str(args.ram_gib),
                        "--dumped-gib", str(args.dumped_gib)], check=True)
    kernel, core = bench_read.build(argparse.Namespace(arch="amd64", **vars(args)))
    zst = core + ".zst"
    if not os.path.exists(zst):
        t = time.perf_counter()
        subprocess.run(["zstd", "-q", "-3", "-T0", "-f", core, "-o", zst], check=True)
        print(f"compressed once with zstd -3 in {time.perf_counter() - t:.1f} s")
    plain = os.path.getsize(core)
    packed = os.path.getsize(zst)
    print(f"dump: {plain / (1 << 30):.2f} GiB, {zst}: {packed / (1 << 20):.0f} MiB")
    bench_read.warm_page_cache(zst)

    work = Path(args.dir) / "compressed-bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t = time.perf_counter()
    subprocess.run(["zstd", "-q", "-d", "-f", zst, "-o", str(work / "cli.out")], check=True)
    t_cli = time.perf_counter() - t
    cli_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    os.unlink(work / "cli.out")
    print(f"zstd CLI -d to a file:    {t_cli:7.2f} s  {plain / t_cli / (1 << 20):7.0f} MiB/s "
          f"of output  (peak RSS {cli_rss / 1024:.0f} MiB)")

    cache = str(work / "cache")
    first = child_open(kernel, zst, cache)
    assert not first["hit"] and first["hz"] in (100, 1000)
    print(f"kvm_dbg first open:       {first['seconds']:7.2f} s  "
          f"{plain / first['seconds'] / (1 << 20):7.0f} MiB/s of output  "
          f"(peak RSS {first['maxrss_kib'] / 1024:.0f} MiB; target < 200 MiB)  "
          f"= {first['seconds'] / t_cli:.2f}x the CLI's time")
    second = child_open(kernel, zst, cache)
    assert second["hit"]
    print(f"kvm_dbg second open:      {second['seconds'] * 1000:7.1f} ms (cache hit; "
          f"target < 500 ms; peak RSS {second['maxrss_kib'] / 1024:.0f} MiB)")
    used = sum(os.stat(os.path.join(cache, n)).st_blocks * 512 for n in os.listdir(cache))
    print(f"cache file: {used / (1 << 30):.2f} GiB on disk (zero runs left as holes)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
