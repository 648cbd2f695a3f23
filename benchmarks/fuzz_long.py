"""Long fuzz run over every target of the fuzz suite, with a seed.

    python benchmarks/fuzz_long.py [--inputs 200000] [--seed 1] [--only NAME]

Targets: every generator fixture and the four real dumps (header, dump_avail,
bitmap, pmap, ELF program headers, byte flips, truncations), kernel ELF files
(header, section table, symbol table), kernel structures (kstate over
FakeDump garbage and over corrupted real-dump memory) and the RSP parser and
session.  Prints inputs tried per target, failures (with the input, ready for
tests/corpus/regressions.json), the slowest call and the peak traced memory.
Exit status 1 when any input failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
import traceback
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import test_fuzz_harness as H  # noqa: E402
import test_fuzz_kernel as K  # noqa: E402
import test_fuzz_kstate as S  # noqa: E402
import test_fuzz_rsp as R  # noqa: E402


def _real_dumps(workdir: str):
    """Prepare the real dumps (decompress + yaml2obj) outside pytest."""
    import realdumps
    if not realdumps.DATA_DIR.is_dir() or not realdumps.yaml2obj():
        return {}
    prep = realdumps._Preparer(Path(workdir))
    out = {}
    for key, (name, _arch) in H.REAL_KEYS.items():
        try:
            out[key] = prep(name)
        except BaseException as e:  # noqa: BLE001 - pytest.skip outside pytest
            print(f"skip real dump {key}: {e}", file=sys.stderr)
    return out


class Stats:
    def __init__(self) -> None:
        self.tried = 0
        self.failures = []
        self.slowest = 0.0
        self.peak = 0
        self.seconds = 0.0
        self.opened = 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", action="append", help="substring of target names to run")
    ap.add_argument("--skip", action="append", default=None,
                    help="substring of target names to leave out (default: powerpc, whose "
                         "reader is still being written; pass --skip none to run all)")
    ap.add_argument("--max-seconds", type=float, default=0,
                    help="stop early after this long (the summary says so)")
    ap.add_argument("--workdir", default=None,
                    help="scratch directory (default: a new temporary directory)")
    ap.add_argument("--cache", default="/tmp/kvm_dbg-fuzz-cache",
                    help="where real dumps are prepared (reused between runs)")
    ap.add_argument("--mem-every", type=int, default=50,
                    help="trace allocations on every Nth input of a target")
    ap.add_argument("--json", help="write the summary as JSON here")
    args = ap.parse_args(argv)

    work = H.scratch_dir(args.workdir)
    os.makedirs(args.cache, exist_ok=True)
    t_start = time.time()
    print(f"seed {args.seed}, {args.inputs} inputs, bound {H.CALL_BOUND_S} s per call, "
          f"workdir {work}", flush=True)

    # -- build targets -------------------------------------------------------
    runners = {}   # name -> (weight, step(rng, stats, index))
    fx_dir = os.path.join(work, "fixtures")
    for name, arch, fmt, version, opts in H.fixture_cases():
        t = H.fixture_target(name, arch, fmt, version, opts, fx_dir)
        runners[t.name] = (1.0, _format_step(t, work))
        runners["kernel:" + name] = (0.3, K.kernel_step(t, work))
    for key, d in _real_dumps(args.cache).items():
        t = H.real_target(d.kernel, d.core, key)
        runners[t.name] = (1.0, _format_step(t, work))
        runners["kstate-mem:" + key] = (1.0, S.real_memory_step(d.kernel, d.core, work, key))
        if os.path.getsize(d.kernel) < (1 << 20):
            runners["kernel:real-" + key] = (0.3, K.kernel_step(t, work))
    for arch in S.ARCHES:
        runners["kstate-fake:" + arch] = (0.5, S.fake_step(arch))
    runners["rsp:parser"] = (0.5, R.parser_step())
    runners["rsp:session"] = (1.0, R.session_step())
    if args.only:
        runners = {k: v for k, v in runners.items() if any(o in k for o in args.only)}
    skip = [x for x in (args.skip or ["powerpc"]) if x != "none"]
    runners = {k: v for k, v in runners.items() if not any(x in k for x in skip)}
    names = sorted(runners)
    weights = [runners[n][0] for n in names]
    stats = {n: Stats() for n in names}
    print(f"{len(names)} targets ready in {time.time() - t_start:.1f} s", flush=True)

    rng = random.Random(args.seed)
    last_print = time.time()
    stopped = ""
    for i in range(args.inputs):
        if args.max_seconds and time.time() - t_start > args.max_seconds:
            stopped = f" (stopped after --max-seconds {args.max_seconds:.0f})"
            break
        name = rng.choices(names, weights)[0]
        st = stats[name]
        seed = rng.getrandbits(64)
        irng = random.Random(seed)
        trace = args.mem_every and st.tried % args.mem_every == 0
        if trace:
            tracemalloc.start()
        t0 = time.perf_counter()
        try:
            runners[name][1](irng, st)
        except H.Failure as f:
            st.failures.append({"seed": seed, "error": str(f)[:4000]})
            print(f"FAIL {name} seed={seed}: {str(f)[:600]}", flush=True)
        except Exception as e:  # noqa: BLE001 - harness bug: record, continue
            st.failures.append({"seed": seed, "error": "harness: " + traceback.format_exc()})
            print(f"HARNESS {name} seed={seed}: {e!r}", flush=True)
        dt = time.perf_counter() - t0
        if trace:
            st.peak = max(st.peak, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        st.seconds += dt
        st.slowest = max(st.slowest, dt)
        st.tried += 1
        if time.time() - last_print > 60:
            last_print = time.time()
            nf = sum(len(s.failures) for s in stats.values())
            print(f"... {i + 1} inputs, {nf} failures, {time.time() - t_start:.0f} s",
                  flush=True)

    total = time.time() - t_start
    print(f"\n{'target':<58} {'inputs':>8} {'fail':>5} {'avg ms':>7} {'max s':>6} "
          f"{'peak MB':>8}")
    for n in names:
        s = stats[n]
        avg = 1000 * s.seconds / s.tried if s.tried else 0
        print(f"{n:<58} {s.tried:>8} {len(s.failures):>5} {avg:>7.1f} {s.slowest:>6.2f} "
              f"{s.peak / 1e6:>8.1f}")
    nfail = sum(len(s.failures) for s in stats.values())
    tried = sum(s.tried for s in stats.values())
    print(f"\n{tried} inputs over {len(names)} targets in {total:.0f} s{stopped}; "
          f"{nfail} failures; "
          f"slowest input {max(s.slowest for s in stats.values()):.2f} s "
          f"(per-call bound {H.CALL_BOUND_S} s); peak traced memory "
          f"{max(s.peak for s in stats.values()) / 1e6:.1f} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seed": args.seed, "inputs": tried, "seconds": total, "failures": nfail,
                       "targets": {n: {"inputs": s.tried, "failures": s.failures,
                                       "max_s": s.slowest, "peak_bytes": s.peak}
                                   for n, s in stats.items()}}, f, indent=1)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if nfail else 0


def _format_step(t: H.Target, work: str):
    wc = H.WorkCopy(t.core, work, t.name.replace(":", "_") + ".core")

    def step(rng: random.Random, st: Stats) -> None:
        m = H.mutate(rng, t)
        H.run_one(t, wc, m, rng, kstate=t.kstate and rng.random() < 0.2)
    return step


if __name__ == "__main__":
    sys.exit(main())
