"""Time to list kernel threads with their PCB registers (target: 2,000 < 1 s).

Default: a generated amd64 minidump (tests/fixturegen/kernelstate.build_threads:
2,000 threads in 500 processes, some on stopped CPUs, stacks with trap frames)
opened with ``kvm_dbg.open``.  ``--fake``: a synthetic dict-backed kvm
(tests/fakedump.py) instead.  ``--kernel/--core``: a real dump.

    python benchmarks/bench_threads.py [--threads N] [--arch A] [--fake]
                                       [--kernel K --core C]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fakedump import FakeDump, FakeKernel  # noqa: E402

from kvm_dbg.kstate import threads  # noqa: E402

TARGET_SECONDS = 1.0


def synthetic(nthreads: int, per_proc: int = 4) -> FakeDump:
    """A fake amd64 kernel with ``nthreads`` threads in processes of ``per_proc``."""
    kvm = FakeDump("amd64")
    k = FakeKernel(kvm)
    tid = 100000
    for pid in range(nthreads // per_proc):
        tds = []
        for i in range(per_proc):
            fp = k.stack([(0xFFFFFFFF80200000 + 16 * j, 0x40) for j in range(9)])
            oncpu = i if pid % 4 == 0 and i < 2 else -1
            regs = {"rip": 0xFFFFFFFF80100000 + tid, "rbp": fp, "rsp": fp - 0x18,
                    "rbx": tid, "r12": pid, "r13": 0, "r14": 1, "r15": 2}
            tds.append((tid, f"thread {i}", oncpu, regs))
            tid += 1
        k.add_proc(pid, f"proc{pid}", tds)
    k.crash(100000, {"rip": 0xFFFFFFFF80C09ADE, "rbp": 0, "rsp": 0})
    for cpu in range(2):
        k.stop_cpu(cpu, {"rip": 0xFFFFFFFF81057988 + cpu, "rbp": 0, "rsp": 0})
    return kvm


def timed(fn, repeat: int):
    best = None
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best, result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--arch", default="amd64", choices=["amd64", "i386", "arm64"])
    ap.add_argument("--fake", action="store_true", help="dict-backed fake kvm instead")
    ap.add_argument("--kernel")
    ap.add_argument("--core")
    args = ap.parse_args(argv)
    tmp = None
    if args.kernel and args.core:
        import kvm_dbg
        kvm = kvm_dbg.open(args.kernel, args.core)
        what = f"real dump {args.core}"
    elif args.fake:
        kvm = synthetic(args.threads)
        what = "synthetic fake kvm"
    else:
        from fixturegen.kernelstate import build_threads

        import kvm_dbg
        tmp = tempfile.TemporaryDirectory(prefix="bench-threads-")
        t0 = time.perf_counter()
        fx = build_threads(tmp.name, args.threads, args.arch)
        t1 = time.perf_counter()
        kvm = kvm_dbg.open(fx.kernel_path, fx.core_path)
        t2 = time.perf_counter()
        print(f"fixture: {args.arch} minidump v{fx.version}, {len(fx.manifest.kstate.procs)} "
              f"procs; generated in {(t1 - t0) * 1000:.0f} ms, kvm_dbg.open "
              f"{(t2 - t1) * 1000:.1f} ms")
        first, t3 = len(threads(kvm)), time.perf_counter()
        print(f"  first listing (cold caches): {first} threads in {(t3 - t2) * 1000:.1f} ms")
        what = "generated dump via kvm_dbg.open"
    list_s, ts = timed(lambda: threads(kvm), args.repeat)
    with_regs = sum(1 for t in ts if t.registers)
    per = list_s / max(len(ts), 1)
    print(f"{what}: {len(ts)} threads ({with_regs} with registers) listed in "
          f"{list_s * 1000:.1f} ms ({per * 1e6:.1f} us/thread; "
          f"2,000 threads ~ {per * 2000 * 1000:.0f} ms; target < {TARGET_SECONDS * 1000:.0f} ms)")
    bt_s, bts = timed(lambda: [t.backtrace() for t in threads(kvm)], 1)
    print(f"  + backtraces for all: {bt_s * 1000:.1f} ms "
          f"({sum(len(b) for b in bts)} frames)")
    if tmp is not None:
        kvm.close()
        tmp.cleanup()
    return 0 if per * 2000 < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
