"""Read-path benchmark on a large sparse minidump (issues #2 and #14).

Builds (once, cached) a minidump modelling a 64 GiB amd64 machine with
4 GiB of dumped pages (or reads the dump given by ``--kernel``/``--core``,
e.g. the real amd64 minidump of tests/realdumps.py), then prints: open time,
symbol() latency, then random 8-byte reads, random 20 KiB reads (half
page-aligned, half not; direct map and kernel map) and sequential 1 MiB reads,
each against a plain mmap copy of the same bytes (the same file offsets, no
translation), two bounds on any pure-Python ``read`` (functions handed each
read's offset: one only slices, one also does a single dict lookup), and the
process's resident memory.  Reads are timed over several
rounds, each with a fresh descriptor and mapping (first touch: page faults
included, the bytes already in the page cache before every pass) and then
repeated; medians are shown.  This VM is shared: compare numbers from the
same run only.

    python benchmarks/bench_read.py [--dir DIR] [--dumped-gib 4] [--ram-gib 64]
                                    [--arch amd64|arm64|riscv]
                                    [--kernel K --core C] [--c-reader PATH]

``--c-reader PATH`` also times libfbsdvmcore (a port of libkvm: ``fvc_read``,
one lseek+read per page) on the same addresses in the same run.  PATH is a
small driver, built outside this repository::

    PATH KERNEL CORE ADDRFILE SIZE PASSES

reads SIZE bytes with ``fvc_read`` at each address of ADDRFILE (little-endian
uint64) PASSES times, printing ``pass N reads R short S seconds T`` per pass
(timed in C around the read loop only), then ``crc C``: the CRC-32 (zlib's)
of the first pass's bytes, which this script checks against its own reads.
To build it (Debian: ``apt-get install cmake libelf-dev``)::

    git clone https://github.com/Moritz-Systems/libfbsdvmcore /tmp/libfbsdvmcore
    cmake -S /tmp/libfbsdvmcore -B /tmp/libfbsdvmcore/build -DCMAKE_BUILD_TYPE=Release
    make -C /tmp/libfbsdvmcore/build fbsdvmcore
    # write fvcbench.c: fvc_open(KERNEL, CORE, err, NULL, NULL); a loop of
    # fvc_read(kd, addr[i], buf, SIZE) between two clock_gettime(CLOCK_MONOTONIC)
    # calls per pass; a last pass feeding the bytes to a CRC-32 (poly 0xEDB88320)
    gcc -O2 fvcbench.c -I/tmp/libfbsdvmcore/lib -L/tmp/libfbsdvmcore/build \\
        -lfbsdvmcore -Wl,-rpath,/tmp/libfbsdvmcore/build -o /tmp/fvcbench
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import resource
import statistics
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import kvm_dbg  # noqa: E402

MiB = 1 << 20


def build(args) -> tuple:
    """Kernel and core paths of the large fixture (built if missing) and its runs."""
    from fixturegen import build_large
    from fixturegen.large import build_large_arch

    d = _fixture_dir(args)
    stamp = d / "done"
    if not stamp.exists():
        t = time.perf_counter()
        if args.arch == "amd64":
            fx = build_large(str(d), ram_gib=args.ram_gib, dumped_gib=args.dumped_gib)
        else:
            fx = build_large_arch(args.arch, str(d), ram_gib=args.ram_gib,
                                  dumped_gib=args.dumped_gib)
        stamp.write_text(f"{fx.kernel_path}\n{fx.core_path}\n")
        print(f"built fixture in {time.perf_counter() - t:.1f} s")
    kernel, core = stamp.read_text().split()
    return kernel, core


def _fixture_dir(args) -> Path:
    return Path(args.dir) / f"{args.arch}-{args.ram_gib}g-{args.dumped_gib}g"


def dumped_runs(kd, min_pages: int = 17) -> list:
    """Direct-map VA ranges of the dumped pages, from the walker-independent bitmap:
    (VA, bytes) of each run of at least ``min_pages`` consecutive pages (a run
    ends where a dump_avail range or the file ends)."""
    idx = kd.backend.index
    starts = {adj for _first, _count, adj in idx.ranges}
    runs, start, prev = [], None, None
    for bit in idx.set_bits():
        if start is not None and bit == prev + 1 and bit not in starts:
            prev = bit
            continue
        if start is not None:
            runs.append((start, prev + 1))
        start = prev = bit
    if start is not None:
        runs.append((start, prev + 1))
    out = []
    dmap = kd.backend.dmapbase - getattr(kd.backend, "dmapphys", 0)
    for a, b in runs:
        pa = idx.pa_of(a)
        off = None if pa is None else idx.find(pa)
        if off is None:
            continue
        pages = min(b - a, (kd.core.size - off) // idx.page)
        if pages >= min_pages:
            out.append((dmap + pa, pages * idx.page))
    return out


def warm_page_cache(path: str) -> None:
    """Read the file once so that no measurement below waits on the disk: every
    method then pays the same first-touch page faults, and only those."""
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.read(fd, 8 * MiB):
            pass
    finally:
        os.close(fd)


def memory() -> dict:
    """RssAnon/RssFile (KiB) from /proc: private memory vs mapped dump pages."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile", "VmRSS"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def kmap_runs(kd, limit_pages: int = 1 << 18) -> list:
    """Readable VA ranges of the kernel map (page-table leaves), at most ``limit_pages``."""
    pt = getattr(kd.backend, "pt", None)
    if pt is None:
        return []
    out, cur, seen = [], None, 0
    for va, _pa, size, _e in pt.leaves():
        for v in range(va, va + size, 4096):
            seen += 1
            if seen > limit_pages:
                break
            try:
                kd.translate(v)
                kd.translate(v + 4095)       # the last page of a truncated dump is short
            except kvm_dbg.KvmError:
                if cur:
                    out.append(tuple(cur))
                cur = None
                continue
            if cur and cur[1] == v:
                cur[1] = v + 4096
            else:
                if cur:
                    out.append(tuple(cur))
                cur = [v, v + 4096]
    if cur:
        out.append(tuple(cur))
    return [(a, b - a) for a, b in out]


def pick(rng, runs: list, n: int, size: int, align: int) -> list:
    """``n`` addresses of ``size``-byte reads inside ``runs``; every other one is
    page-aligned, the rest start at a random byte (multiple of ``align``)."""
    runs = [r for r in runs if r[1] >= size + 4096]
    if not runs:
        return []
    weights = [length for _, length in runs]
    out = []
    for i, (base, length) in enumerate(rng.choices(runs, weights, k=n)):
        a = base + rng.randrange(length - size - 4096 + 1)
        out.append(a & ~4095 if i % 2 == 0 else a & ~(align - 1))
    return out


def file_spans(kd, addrs: list, size: int) -> list:
    """(start, end) file offsets of every file-contiguous piece of each read,
    found page by page: what a plain mmap copy of the same bytes slices."""
    out = []
    for a in addrs:
        end = a + size
        cur = None
        while a < end:
            take = min(end - a, 4096 - (a & 4095))
            off = kd.translate(a)
            if cur is not None and cur[1] == off:
                cur[1] = off + take
            else:
                if cur is not None:
                    out.append(tuple(cur))
                cur = [off, off + take]
            a += take
        out.append(tuple(cur))
    return out


def run_c(args, kernel: str, core: str, addrs: list, size: int) -> tuple:
    """(reads/s of the first pass, of the second pass, crc) from the C driver."""
    import subprocess
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".addrs", dir=args.dir) as f:
        f.write(b"".join(a.to_bytes(8, "little") for a in addrs))
        f.flush()
        out = subprocess.run([args.c_reader, kernel, core, f.name, str(size), "2"],
                             capture_output=True, text=True, check=True).stdout
    rates, crc = [], None
    for line in out.splitlines():
        w = line.split()
        if w[0] == "pass":
            if int(w[5]):
                sys.exit(f"C reader: {w[5]} of {w[3]} reads came back short")
            rates.append(int(w[3]) / float(w[7]))
        elif w[0] == "crc":
            crc = int(w[1], 16)
    return rates[0], rates[1], crc


def crc_of(kd, addrs: list, size: int) -> int:
    crc = 0
    for a in addrs:
        crc = zlib.crc32(kd.read(a, size), crc)
    return crc


def bench_reads(args, kernel: str, core: str, addrs_rounds: list, size: int) -> dict:
    """Rates (reads/s) of kvm_dbg, a plain mmap and the C reader on the same
    addresses: per round a fresh descriptor/mapping/process, first touch then
    repeated."""
    res = {k: [] for k in ("cold", "warm", "mm_cold", "mm_warm", "c_cold", "c_warm", "ceil",
                           "ceil1")}
    fd = os.open(core, os.O_RDONLY)
    for addrs in addrs_rounds:
        n = len(addrs)
        with kvm_dbg.open(kernel, core) as other:
            spans = file_spans(other, addrs, size)
        resident(fd, spans)
        with kvm_dbg.open(kernel, core) as fresh:
            read = fresh.read
            t = time.perf_counter()
            for a in addrs:
                read(a, size)
            res["cold"].append(n / (time.perf_counter() - t))
            t = time.perf_counter()
            for a in addrs:
                read(a, size)
            res["warm"].append(n / (time.perf_counter() - t))
            crc = crc_of(fresh, addrs, size) if args.c_reader else None
        resident(fd, spans)
        with open(core, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            for key in ("mm_cold", "mm_warm"):
                t = time.perf_counter()
                for o, e in spans:
                    mm[o:e]
                res[key].append(n / (time.perf_counter() - t))
            bare, lookup = ceiling(mm, addrs, spans, size)
            res["ceil"].append(n / bare)
            res["ceil1"].append(n / lookup)
            mm.close()
        if args.c_reader:
            resident(fd, spans)
            cold, warm, c_crc = run_c(args, kernel, core, addrs, size)
            if c_crc != crc:
                sys.exit(f"C reader read different bytes ({size}-byte reads): "
                         f"crc {c_crc:08x}, kvm_dbg {crc:08x}")
            res["c_cold"].append(cold)
            res["c_warm"].append(warm)
    os.close(fd)
    return res


def ceiling(mm, addrs: list, spans: list, size: int) -> tuple:
    """Seconds for the same copies through two Python functions that are
    handed each read's file offset: one only slices, the other first does
    the least a reader must (one lookup in a one-entry dict, the bounds
    checks).  No pure-Python ``read(addr, size)`` can beat the second: it
    must at least find the offset.  Both bound what the reader can reach
    against a bare mmap loop."""
    offs, i = [], 0
    for _a in addrs:                     # each read's first file offset
        offs.append(spans[i][0])
        left = size - (spans[i][1] - spans[i][0])
        i += 1
        while left > 0:                  # the read's other pieces
            left -= spans[i][1] - spans[i][0]
            i += 1
    table = {0: (0, 0, 1 << 62)}

    def only_slice(off: int, n: int) -> bytes:
        return mm[off:off + n]

    def one_lookup(off: int, n: int) -> bytes:
        delta, lo, hi = table[off >> 62]
        off += delta
        if lo <= off and off + n <= hi and n >= 0:
            return mm[off:off + n]
        raise AssertionError("unreachable")

    out = []
    for read in (only_slice, one_lookup):
        t = time.perf_counter()
        for off in offs:
            read(off, size)
        out.append(time.perf_counter() - t)
    return tuple(out)


def resident(fd: int, spans: list) -> None:
    """Bring the bytes a pass will read into the page cache (pread: no page of
    any mapping is touched) just before the pass: memory reclaim on a shared
    machine (e.g. DAMON's pageout) otherwise evicts them between passes, and
    whichever pass ran first would pay the disk reads for the next one."""
    for o, e in spans:
        os.pread(fd, e - o, o)


def report(title: str, res: dict, size: int) -> None:
    med = statistics.median
    unit = (lambda r: f"{r:10,.0f} /s") if size <= 64 else \
        (lambda r: f"{r:8,.0f} /s {r * size / MiB:6,.0f} MiB/s")
    print(f"{title}: median of {len(res['cold'])} rounds")
    for phase, ours, mm, c in (("first touch", "cold", "mm_cold", "c_cold"),
                               ("repeated", "warm", "mm_warm", "c_warm")):
        line = (f"  {phase:11s} kvm_dbg {unit(med(res[ours]))} "
                f"[{min(res[ours]):,.0f} .. {max(res[ours]):,.0f}]  "
                f"plain mmap {unit(med(res[mm]))} (x{med(res[ours]) / med(res[mm]):.2f})")
        if res[c]:
            line += f"  C {unit(med(res[c]))} (x{med(res[ours]) / med(res[c]):.2f})"
        print(line)
    if res["ceil"]:
        warm = med(res["mm_warm"])
        print(f"  bounds, repeated: a Python function handed the offset that only slices "
              f"x{med(res['ceil']) / warm:.2f}, that also does one lookup "
              f"x{med(res['ceil1']) / warm:.2f} plain mmap")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=os.environ.get("KVM_DBG_BENCH_DIR", "/tmp/kvm_dbg_bench"))
    ap.add_argument("--ram-gib", type=int, default=64)
    ap.add_argument("--dumped-gib", type=int, default=4)
    ap.add_argument("--reads", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bulk-mib", type=int, default=512)
    ap.add_argument("--bulk-size", type=int, default=20 * 1024,
                    help="size of the random bulk reads (default 20 KiB)")
    ap.add_argument("--bulk-reads", type=int, default=20_000)
    ap.add_argument("--arch", choices=("amd64", "arm64", "riscv"), default="amd64")
    ap.add_argument("--kernel", help="benchmark this kernel + --core instead of the model")
    ap.add_argument("--core")
    ap.add_argument("--c-reader", metavar="PATH",
                    help="libfbsdvmcore driver timed on the same reads (see the docstring)")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if bool(args.kernel) != bool(args.core):
        ap.error("--kernel and --core go together")
    os.makedirs(args.dir, exist_ok=True)
    if args.kernel:
        kernel, core = args.kernel, args.core
    else:
        if not args.build_only and not (_fixture_dir(args) / "done").exists():
            import subprocess  # build in a child so its memory does not count here
            subprocess.run([sys.executable, __file__, "--build-only", "--dir", args.dir,
                            "--ram-gib", str(args.ram_gib), "--dumped-gib",
                            str(args.dumped_gib), "--arch", args.arch],
                           check=True)
        kernel, core = build(args)
        if args.build_only:
            return
    size = os.path.getsize(core)
    print(f"core: {core} ({size / (1 << 30):.2f} GiB on disk)")
    t = time.perf_counter()
    warm_page_cache(core)
    print(f"page cache warmed in {time.perf_counter() - t:.1f} s (timings exclude disk I/O)")

    t = time.perf_counter()
    kd = kvm_dbg.open(kernel, core)
    t_open = time.perf_counter() - t
    print(f"open (kernel + dump):           {t_open * 1000:8.1f} ms   (target < 500 ms)")

    t = time.perf_counter()
    hz = kd.symbol("hz")
    t_first = time.perf_counter() - t
    n = 100_000
    t = time.perf_counter()
    for _ in range(n):
        kd.symbol("hz")
    t_sym = (time.perf_counter() - t) / n
    print(f"symbol() first call:            {t_first * 1e6:8.1f} us  (builds the index)")
    print(f"symbol() latency:               {t_sym * 1e6:8.2f} us")
    assert kd.read_int(hz, 4) in (100, 1000)

    runs = dumped_runs(kd)
    total = sum(n for _, n in runs)
    print(f"dumped direct-map runs:         {len(runs)} covering {total / (1 << 30):.2f} GiB")
    # Random reads: several rounds, each with a FRESH descriptor (a fresh mmap,
    # so every first touch pays its page fault again) and fresh addresses; the
    # median is reported, since this VM's timings vary from round to round.
    # The plain mmap copies the same bytes at the same file offsets without
    # translation: the page-fault-bound limit of each access pattern.
    rng = random.Random(1)
    rounds = []
    for _ in range(args.rounds):
        addrs = []
        for _ in range(args.reads):
            base, length = runs[rng.randrange(len(runs))]
            addrs.append(base + (rng.randrange(length - 8) & ~7))
        rounds.append(addrs)
    res = bench_reads(args, kernel, core, rounds, 8)
    report("random 8-byte reads (direct map; target >= 300,000/s first touch)", res, 8)
    bs = args.bulk_size
    regions = [("direct map", dumped_runs(kd, (bs + 8191) // 4096), 1),
               ("kernel map", kmap_runs(kd), 1)]
    for name, region, align in regions:
        rounds = [pick(rng, region, args.bulk_reads, bs, align) for _ in range(args.rounds)]
        if not rounds or not rounds[0]:
            print(f"random {bs // 1024} KiB reads ({name}): no readable range that long")
            continue
        res = bench_reads(args, kernel, core, rounds, bs)
        report(f"random {bs // 1024} KiB reads ({name}, half page-aligned, half not; "
               "targets >= 1.0x C, >= 0.9x plain mmap)", res, bs)
    base, length = max(runs, key=lambda r: r[1])
    bulk = min(length, args.bulk_mib * MiB)
    chunk = min(MiB, bulk)
    seq = [base + off for off in range(0, bulk - bulk % chunk, chunk)]
    res = bench_reads(args, kernel, core, [seq] * args.rounds, chunk)
    report(f"sequential {chunk // 1024} KiB reads ({len(seq) * chunk // MiB} MiB, direct map)",
           res, chunk)
    mem = memory()
    print(f"resident memory, private:       {mem.get('RssAnon', 0) / 1024:8.0f} MiB  "
          f"(target < 200 MiB; peak RSS incl. mapped file pages "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
    print(f"resident memory, mapped file:   {mem.get('RssFile', 0) / 1024:8.0f} MiB  "
          f"(page cache of the dump, reclaimable)")
    kd.close()


if __name__ == "__main__":
    main()
