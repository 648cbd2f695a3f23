"""Shared fuzzing machinery (targets, mutators, the bounded exerciser) and the
replay of tests/corpus/: every input that once broke kvm_dbg.

The invariant every fuzz test checks through :func:`exercise`: opening and
reading a mutated dump either succeeds or raises ``KvmError`` (compat API:
None / -1 with a message), and each call finishes within ``CALL_BOUND_S``
(SIGALRM in the harness, plus a wall-clock check).  ``benchmarks/fuzz_long.py``
drives the same functions with a plain seeded ``random.Random``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
import sys
import time
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pytest
from hypothesis import Phase

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import kvm_dbg  # noqa: E402
from kvm_dbg import compat  # noqa: E402
from kvm_dbg.elfkernel import KernelImage  # noqa: E402

#: Wall-clock bound of one library call (open, one read, a bounded walk): 2 s in CI
#: (a loaded 2-core runner), 1 s in benchmarks/fuzz_long.py (KVM_FUZZ_BOUND=1).
CALL_BOUND_S = float(os.environ.get("KVM_FUZZ_BOUND", "2.0"))
#: Peak Python allocation allowed while opening a small hostile file.
MEM_BOUND = 8 << 20
#: No "explain" phase: its tracer slows calls past the time bound.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)
CORPUS = ROOT / "tests" / "corpus"
WALK_LIMIT = 256
PAGE = 4096


class CallTimeout(BaseException):
    """A library call ran past CALL_BOUND_S (BaseException: no ``except Exception``
    in the library can swallow it)."""


class Failure(AssertionError):
    """An invariant broke; the message holds the input (target + patches)."""


@contextmanager
def time_limit(seconds: float, what: str):
    """Raise CallTimeout in the main thread after ``seconds``; also check wall time."""
    use_alarm = hasattr(signal, "setitimer") and _main_thread()
    if use_alarm:
        def on_alarm(_sig, _frm):
            raise CallTimeout(f"{what}: exceeded {seconds} s")
        old = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    took = time.perf_counter() - t0
    if took > seconds:
        raise CallTimeout(f"{what}: took {took:.2f} s (bound {seconds} s)")


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


# -- targets --------------------------------------------------------------------

@dataclass
class Region:
    """A part of the file the mutator knows: header field, section, table."""

    name: str
    off: int
    size: int
    width: int          # 1 for byte areas, else the integer width of its entries


@dataclass
class Target:
    """A pristine kernel + dump pair and what the mutators know about it."""

    name: str
    kernel: str
    core: str
    order: str
    size: int
    kind: str                                  # "minidump" or "elf"
    regions: List[Region] = field(default_factory=list)
    addrs: List[int] = field(default_factory=list)
    head: int = 0                              # byte flips land in [0, head)
    page: int = PAGE
    frames: List[int] = field(default_factory=list)   # physical pages in the dump
    resolver: Optional[Callable[[str], Optional[int]]] = None
    kstate: bool = False


def describe(name: str, kernel: str, core: str, addrs: Sequence[int] = (),
             kstate: bool = False) -> Target:
    """Inspect a pristine pair (through kvm_dbg) and list its mutable regions."""
    kd = kvm_dbg.open(kernel, core)
    try:
        b = kd.backend
        size = kd.core.size
        image = KernelImage(kernel)
        syms = {}
        for s in ("hz", "version", "allproc", "kernbase", "dumptid", "msgbufp", "ticks",
                  "KPML4phys", "IdlePTD", "IdlePDPT", "pae_mode", "linker_files"):
            v = image.lookup(s)
            if v is not None:
                syms[s] = v
        image.close()
        t = Target(name, kernel, core, kd.byteorder, size,
                   "minidump" if hasattr(b, "hdr") else "elf", kstate=kstate,
                   resolver=_dict_resolver(syms, kernel))
        found = list(addrs) + list(syms.values())
        found += [p.kp_kmap_vaddr for p in islice(kd.walk_pages(), 64) if p.kp_kmap_vaddr]
        if t.kind == "minidump":
            t.page = b.page_size
            sec = b.sections
            for fname, off, code in tuple(b.fields) + tuple(b.version_fields.get(b.version, ())):
                t.regions.append(Region("hdr." + fname, off, struct.calcsize(code),
                                        struct.calcsize(code)))
            da = b.hdr.get("dumpavailsize", 0)
            if da:
                t.regions.append(Region("dump_avail", sec.dump_avail, min(da, 4096), 8))
            t.regions.append(Region("bitmap", sec.bitmap, b.hdr["bitmapsize"], 1))
            t.regions.append(Region("pmap", sec.pmap, min(b.hdr["pmapsize"], size - sec.pmap),
                                    b.pmap.entsize))
            t.regions.append(Region("msgbuf", sec.msgbuf, min(b.hdr["msgbufsize"], 4096), 1))
            t.head = min(size, sec.sparse + 4 * t.page)
            t.frames = [b.index.pa_of(bit) for bit in islice(b.index.set_bits(), 4096)]
            t.frames = [f for f in t.frames if f is not None]
            dm = getattr(b, "dmapbase", None)
            if dm is not None:
                found += [dm + f + 0x10 for f in t.frames[:8]]
        else:
            e = "<" if kd.byteorder == "little" else ">"
            head = kd.core.head(64)
            if head[4] == 2:
                phoff, = struct.unpack_from(e + "Q", head, 32)
                phentsize, phnum = struct.unpack_from(e + "HH", head, 54)
                ehdr = (("e_phoff", 32, 8), ("e_phentsize", 54, 2), ("e_phnum", 56, 2),
                        ("e_type", 16, 2), ("e_machine", 18, 2), ("ei_class", 4, 1),
                        ("ei_data", 5, 1))
                pfields = (("p_type", 0, 4), ("p_offset", 8, 8), ("p_vaddr", 16, 8),
                           ("p_paddr", 24, 8), ("p_filesz", 32, 8), ("p_memsz", 40, 8))
            else:
                phoff, = struct.unpack_from(e + "I", head, 28)
                phentsize, phnum = struct.unpack_from(e + "HH", head, 42)
                ehdr = (("e_phoff", 28, 4), ("e_phentsize", 42, 2), ("e_phnum", 44, 2),
                        ("e_type", 16, 2), ("e_machine", 18, 2), ("ei_class", 4, 1),
                        ("ei_data", 5, 1))
                pfields = (("p_type", 0, 4), ("p_offset", 4, 4), ("p_vaddr", 8, 4),
                           ("p_paddr", 12, 4), ("p_filesz", 16, 4), ("p_memsz", 20, 4))
            for fname, off, w in ehdr:
                t.regions.append(Region("ehdr." + fname, off, w, w))
            for i in range(min(phnum, 8)):
                for fname, off, w in pfields:
                    t.regions.append(Region(f"phdr[{i}].{fname}", phoff + i * phentsize + off,
                                            w, w))
            t.head = min(size, max(phoff + phnum * phentsize, 64) + PAGE)
            segs = getattr(b, "segs", None)
            if segs is not None:
                for lo, hi in segs.ranges()[:8]:
                    t.frames += list(range(lo, min(hi, lo + 64 * PAGE), PAGE))
        t.addrs = sorted(set(a for a in found if a is not None))[:64]
        return t
    finally:
        kd.close()


def _dict_resolver(syms: Dict[str, int], kernel: str):
    """A resolver that avoids re-indexing large kernels for every input."""
    image = KernelImage(kernel)
    cache: Dict[str, Optional[int]] = dict(syms)

    def resolve(name: str) -> Optional[int]:
        if name not in cache:
            cache[name] = image.lookup(name)
        return cache[name]
    return resolve


# -- working copies ------------------------------------------------------------

def scratch_dir(base: Optional[str] = None) -> str:
    if base:
        return base
    import tempfile
    return tempfile.mkdtemp(prefix="kvmfuzz-")


def sparse_copy(src: str, dst: str, chunk: int = 1 << 20) -> None:
    """Copy a mostly-zero dump without writing its zero megabytes."""
    zero = bytes(chunk)
    with open(src, "rb") as s, open(dst, "wb") as d:
        while True:
            block = s.read(chunk)
            if not block:
                break
            if block == zero[:len(block)]:
                d.seek(len(block), os.SEEK_CUR)
            else:
                d.write(block)
        d.truncate(s.tell())


class WorkCopy:
    """A writable copy of a file; mutations are applied in place and undone
    after each input (no whole-file copy per input)."""

    def __init__(self, src: str, workdir: str, tag: str) -> None:
        self.src = src
        self.path = os.path.join(workdir, tag)
        sparse_copy(src, self.path)
        self.size = os.path.getsize(src)
        self._undo: List[Tuple[int, bytes]] = []
        self._truncated: Optional[int] = None

    def apply(self, patches: Sequence[Tuple[int, bytes]], truncate: Optional[int]) -> str:
        with open(self.path, "r+b") as f:
            for off, data in patches:
                if off < 0 or off >= self.size:
                    continue
                data = data[:self.size - off]
                f.seek(off)
                self._undo.append((off, f.read(len(data))))
                f.seek(off)
                f.write(data)
            if truncate is not None and 0 <= truncate < self.size:
                f.truncate(truncate)
                self._truncated = truncate
        return self.path

    def restore(self) -> None:
        with open(self.path, "r+b") as f:
            if self._truncated is not None:
                with open(self.src, "rb") as s:
                    s.seek(self._truncated)
                    f.seek(self._truncated)
                    shutil.copyfileobj(s, f, 1 << 20)
                self._truncated = None
            for off, data in reversed(self._undo):
                f.seek(off)
                f.write(data)
        self._undo = []

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


# -- mutators ----------------------------------------------------------------

@dataclass
class Mutation:
    patches: List[Tuple[int, bytes]] = field(default_factory=list)
    truncate: Optional[int] = None
    notes: List[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"patches": [[o, d.hex()] for o, d in self.patches], "truncate": self.truncate,
                "notes": self.notes}

    @classmethod
    def from_json(cls, d: dict) -> Mutation:
        return cls([(o, bytes.fromhex(h)) for o, h in d["patches"]], d.get("truncate"),
                   list(d.get("notes", [])))


def interesting(rng: random.Random, width: int, t: Target, orig: Optional[int] = None) -> int:
    """A value for an integer field: boundaries, file-size neighbours, huge, random."""
    top = (1 << (8 * width)) - 1
    pool = [0, 1, 2, 3, 7, 8, 0xFF, PAGE - 1, PAGE, PAGE + 1, t.size - 1, t.size, t.size + 1,
            t.size // 2, t.size - PAGE, t.size + PAGE, 1 << 31, (1 << 31) - 1, (1 << 32) - 1,
            1 << 32, 1 << 63, (1 << 63) - 1, top, top - PAGE + 1, 0xFFFF, 0x10000]
    if orig is not None:
        pool += [orig + 1, orig - 1, orig * 2, orig << 12, orig >> 1, orig + PAGE,
                 orig - PAGE, orig ^ (1 << rng.randrange(8 * width))]
    r = rng.random()
    if r < 0.6:
        v = rng.choice(pool)
    elif r < 0.8:
        v = rng.getrandbits(8 * width)
    else:
        v = rng.randrange(0, max(2, 2 * t.size))
    return v & top


def _pack(v: int, width: int, order: str) -> bytes:
    return v.to_bytes(width, order)


def _read_at(path: str, off: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)


def _field_mut(rng, t: Target, reg: Region, m: Mutation) -> None:
    n = max(1, reg.size // reg.width)
    i = rng.randrange(min(n, 64)) if rng.random() < 0.7 else rng.randrange(n)
    off = reg.off + i * reg.width
    orig = int.from_bytes(_read_at(t.core, off, reg.width).ljust(reg.width, b"\0"), t.order)
    v = interesting(rng, reg.width, t, orig)
    m.patches.append((off, _pack(v, reg.width, t.order)))
    m.notes.append(f"{reg.name}[{i}]=0x{v:x}")


def _dump_avail_mut(rng, t: Target, reg: Region, m: Mutation) -> None:
    k = rng.randrange(1, 8)
    pairs = []
    for _ in range(k):
        kind = rng.random()
        if kind < 0.3:      # start > end
            a = rng.randrange(1, 1 << 40)
            pairs.append((a, rng.randrange(0, a)))
        elif kind < 0.5:    # huge
            pairs.append((rng.choice([0, PAGE]), rng.choice([1 << 63, (1 << 64) - 1, 1 << 52])))
        elif kind < 0.7:    # overlapping / unsorted copies of real frames
            base = rng.choice(t.frames) if t.frames else 0
            pairs.append((base, base + rng.randrange(1, 64) * t.page))
        else:
            a = rng.getrandbits(rng.choice([12, 32, 48, 64]))
            pairs.append((a, (a + rng.getrandbits(rng.choice([12, 24, 40]))) % (1 << 64)))
    if rng.random() < 0.3:
        rng.shuffle(pairs)
    data = b"".join(_pack(a, 8, t.order) + _pack(b, 8, t.order) for a, b in pairs)
    if rng.random() < 0.5:
        data += bytes(16)
    m.patches.append((reg.off, data[:reg.size]))
    m.notes.append(f"dump_avail={[(hex(a), hex(b)) for a, b in pairs]}")


def _bytes_mut(rng, t: Target, reg: Region, m: Mutation) -> None:
    off = reg.off + rng.randrange(max(1, reg.size))
    n = rng.choice([1, 1, 2, 8, 64, 512, PAGE])
    fill = rng.choice(["ff", "00", "rand"])
    data = (b"\xff" * n if fill == "ff" else bytes(n) if fill == "00"
            else bytes(rng.getrandbits(8) for _ in range(min(n, 64))) * (n // 64 or 1))
    data = data[:max(1, reg.off + reg.size - off)]
    m.patches.append((off, data))
    m.notes.append(f"{reg.name}@{off}:{fill}x{len(data)}")


def _pte_mut(rng, t: Target, reg: Region, m: Mutation) -> None:
    """A page-table entry: valid bits + frames that loop, point at tables, past RAM."""
    n = max(1, reg.size // reg.width)
    i = rng.randrange(n) if rng.random() < 0.5 else rng.randrange(min(n, 512))
    off = reg.off + i * reg.width
    bits = 8 * reg.width
    r = rng.random()
    if r < 0.35 and t.frames:
        frame = rng.choice(t.frames)             # an existing page (maybe a table: loop)
    elif r < 0.6:
        frame = ((1 << bits) - 1) & ~(PAGE - 1)  # huge frame
    else:
        frame = rng.getrandbits(bits) & ~(PAGE - 1)
    flags = rng.choice([0x1, 0x3, 0x83, 0x81, 0x7, 0x703, 0x2, rng.getrandbits(12)])
    v = (frame | flags) & ((1 << bits) - 1)
    m.patches.append((off, _pack(v, reg.width, t.order)))
    m.notes.append(f"{reg.name}[{i}]=0x{v:x}")


def mutate(rng: random.Random, t: Target, max_ops: int = 4) -> Mutation:
    """1..max_ops random mutations of the target's header/sections/tables."""
    m = Mutation()
    for _ in range(rng.randrange(1, max_ops + 1)):
        r = rng.random()
        fields = [g for g in t.regions if g.name.startswith(("hdr.", "ehdr.", "phdr"))]
        if r < 0.35 and fields:
            _field_mut(rng, t, rng.choice(fields), m)
        elif r < 0.45:
            reg = next((g for g in t.regions if g.name == "dump_avail"), None)
            if reg is not None:
                _dump_avail_mut(rng, t, reg, m)
        elif r < 0.55:
            reg = next((g for g in t.regions if g.name in ("bitmap", "msgbuf")), None)
            if reg is not None:
                _bytes_mut(rng, t, reg, m)
        elif r < 0.72:
            reg = next((g for g in t.regions if g.name == "pmap"), None)
            if reg is not None:
                _pte_mut(rng, t, reg, m)
            elif t.frames:                          # ELF: scribble over a physical page
                _bytes_mut(rng, t, Region("page", _frame_offset(t, rng), PAGE, 1), m)
        elif r < 0.9:
            off = rng.randrange(max(1, t.head))
            k = rng.choice([1, 1, 1, 2, 4, 8])
            data = bytes(rng.getrandbits(8) for _ in range(k))
            m.patches.append((off, data))
            m.notes.append(f"flip@{off}")
        else:
            cuts = [g.off + d for g in t.regions for d in (0, 1, g.size - 1)] + \
                [t.head, t.size - 1, t.size // 2, rng.randrange(1, t.size)]
            m.truncate = max(1, min(t.size - 1, rng.choice(cuts)))
            m.notes.append(f"truncate={m.truncate}")
    return m


def _frame_offset(t: Target, rng) -> int:
    return min(t.size - 1, rng.randrange(t.head, max(t.head + 1, t.size)))


# -- the exerciser -------------------------------------------------------------

ALLOWED = (kvm_dbg.KvmError,)


def _guard(what: str, fn, *args, bound: float = CALL_BOUND_S):
    """Run one library call under the time bound; KvmError is a valid outcome."""
    try:
        with time_limit(bound, what):
            return fn(*args), None
    except ALLOWED as e:
        return None, e


def exercise(t: Target, core: str, rng: random.Random, kernel: Optional[str] = None,
             resolver=True, compat_too: bool = True, kstate: bool = False) -> Dict[str, int]:
    """Open ``core`` and read it every way; raise Failure on a broken invariant."""
    kernel = kernel or t.kernel
    res = t.resolver if resolver is True else resolver
    stats = {"ok_open": 0, "err_open": 0, "reads": 0}
    try:
        _exercise(t, core, kernel, res, rng, stats, compat_too, kstate)
    except CallTimeout as e:
        raise Failure(f"timeout: {e}") from None
    except Failure:
        raise
    except Exception as e:  # noqa: BLE001 - the point of the harness
        import traceback
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__)[-6:])
        raise Failure(f"{type(e).__name__}: {e}\n{tb}") from None
    return stats


def _exercise(t, core, kernel, res, rng, stats, compat_too, kstate) -> None:
    kd, err = _guard("open", lambda: kvm_dbg.open(kernel, core, resolver=res))
    if kd is None:
        stats["err_open"] += 1
        if not str(err):
            raise Failure("KvmError without a message at open")
    else:
        stats["ok_open"] += 1
        try:
            addrs = list(t.addrs)
            rng.shuffle(addrs)
            addrs = addrs[:4] + [rng.getrandbits(64), rng.choice([0, 1 << 63, (1 << 64) - 8])]
            for a in addrs:
                _guard("read", kd.read, a, rng.choice([1, 8, 16, 4096]))
                _guard("read_partial", kd.read_partial, a, rng.choice([64, 3 * PAGE + 5,
                                                                       64 * PAGE]))
                _guard("translate", kd.translate, a)
                stats["reads"] += 3
            _guard("walk_pages", lambda: list(islice(kd.walk_pages(), WALK_LIMIT)))
            _guard("msgbuf_section", lambda: kd.msgbuf_section)
            if kstate:
                for name in ("threads", "procs", "msgbuf", "klds", "panic_info"):
                    _guard(name, getattr(kd, name), bound=4 * CALL_BOUND_S)
        finally:
            kd.close()
    if not compat_too:
        return
    errbuf = bytearray(compat.POSIX2_LINE_MAX)
    with time_limit(CALL_BOUND_S, "kvm_open2"):
        ckd = compat.kvm_open2(kernel, core, compat.O_RDONLY, errbuf, res)
    if ckd is None:
        if errbuf[0] == 0:
            raise Failure("kvm_open2 returned NULL without a message")
        return
    try:
        buf = bytearray(64)
        for a in t.addrs[:4] + [rng.getrandbits(64)]:
            with time_limit(CALL_BOUND_S, "kvm_read"):
                n = compat.kvm_read(ckd, a, buf)
            if n == -1 and not compat.kvm_geterr(ckd):
                raise Failure("kvm_read -1 without a message")
            if not (n == -1 or 0 <= n <= len(buf)):
                raise Failure(f"kvm_read returned {n}")
        count = [0]

        def cb(_page, _closure):
            count[0] += 1
            return count[0] < 64
        with time_limit(CALL_BOUND_S, "kvm_walk_pages"):
            compat.kvm_walk_pages(ckd, cb, None)
    finally:
        compat.kvm_close(ckd)


def run_one(t: Target, work: WorkCopy, m: Mutation, rng: random.Random,
            kstate: bool = False) -> Dict[str, int]:
    """Apply a mutation, exercise, restore; Failure messages carry the input."""
    path = work.apply(m.patches, m.truncate)
    try:
        return exercise(t, path, rng, kstate=kstate, compat_too=rng.random() < 0.3)
    except Failure as f:
        raise Failure(f"{t.name}: {json.dumps(m.to_json())}\n{f}") from None
    finally:
        work.restore()


@contextmanager
def peak_memory():
    """Yield a dict whose 'peak' is the traced peak allocation in bytes."""
    out = {"peak": 0}
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak() if hasattr(tracemalloc, "reset_peak") else None
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield out
    finally:
        out["peak"] = tracemalloc.get_traced_memory()[1] - base
        if started:
            tracemalloc.stop()


# -- target catalogue -----------------------------------------------------------

def fixture_cases(include_others: bool = True):
    """(name, arch, fmt, version, options) of every generator case (a generator
    that fails to import fails the caller: the target list never shrinks)."""
    import importlib

    import fixturegen as fg
    cases = list(fg.CASES)
    if include_others:
        for mod in sorted(set(fg.OTHER_ARCHES.values())):
            cases += list(importlib.import_module(f"fixturegen.{mod}").CASES)
    out = []
    for arch, fmt, version, opts in cases:
        tag = "-".join(f"{k}{v}" for k, v in sorted(opts.items()))
        out.append((f"{arch}-{fmt}-v{version}" + (f"-{tag}" if tag else ""), arch, fmt,
                    version, opts))
    return out


def fixture_target(name: str, arch: str, fmt: str, version: int, opts: dict,
                   tmpdir: str) -> Target:
    """A generated dump as a fuzz target; a generator or reader failure raises."""
    import fixturegen as fg
    d = os.path.join(tmpdir, name)
    os.makedirs(d, exist_ok=True)
    fx = fg.build(arch, fmt, version, d, **opts)
    kvm_dbg.open(fx.kernel_path, fx.core_path).close()
    man = fx.manifest
    addrs = [p.va for p in man.probes] + [h.va for h in man.holes] + [p.va for p in man.partial]
    return describe(f"fixture:{name}", fx.kernel_path, fx.core_path, addrs)


REAL_KEYS = {"amd64-full": ("vmcore-amd64-full", "amd64"),
             "amd64-minidump": ("vmcore-amd64-minidump", "amd64"),
             "arm64-minidump": ("vmcore-arm64-minidump", "arm64"),
             "i386-minidump": ("vmcore-i386-minidump", "i386")}


def real_target(kernel: str, core: str, key: str) -> Target:
    return describe(f"real:{key}", kernel, core, kstate=True)


# -- corpus replay ---------------------------------------------------------------

def load_corpus() -> List[dict]:
    path = CORPUS / "regressions.json"
    if not path.exists():
        return []
    return json.loads(path.read_text())["inputs"]


def corpus_files() -> List[Path]:
    return sorted(p for p in CORPUS.glob("*.bin"))


@pytest.fixture(scope="module")
def fixture_targets(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("fuzzfx"))
    out = {}
    for name, arch, fmt, version, opts in fixture_cases():
        t = fixture_target(name, arch, fmt, version, opts, tmp)
        out[t.name] = t
    return out


@pytest.mark.parametrize("entry", load_corpus(), ids=lambda e: e.get("id", "?"))
def test_corpus_regression(entry, fixture_targets, real_dump_factory, tmp_path):
    """Every input that once broke an invariant now passes it."""
    target = entry["target"]
    if target.startswith("real:"):
        name, _arch = REAL_KEYS[target[5:]]
        d = real_dump_factory(name)
        t = real_target(d.kernel, d.core, target[5:])
    else:
        t = fixture_targets[target]       # a corpus entry whose case is gone must fail
    work = WorkCopy(t.core, str(tmp_path), "core")
    rng = random.Random(0)
    m = Mutation.from_json(entry)
    with peak_memory() as mem:
        run_one(t, work, m, rng, kstate=t.kstate)
    assert mem["peak"] < MEM_BOUND + 64 * t.size // 100, entry.get("id")


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_corpus_files_open_cleanly(path, fixture_targets):
    """Tiny standalone hostile files: as a core with every fixture kernel kind."""
    kernels = {}
    for t in fixture_targets.values():
        kernels.setdefault(t.name.split("-")[0], t.kernel)
    for kernel in kernels.values():
        with time_limit(CALL_BOUND_S, f"open {path.name}"):
            try:
                kvm_dbg.open(kernel, str(path)).close()
            except kvm_dbg.KvmError:
                pass
        with time_limit(CALL_BOUND_S, f"open {path.name} as kernel"):
            try:
                kvm_dbg.open(str(path), str(path)).close()
            except kvm_dbg.KvmError:
                pass


def test_time_limit_fires():
    """The harness bound itself works (a hang would otherwise pass silently)."""
    with pytest.raises(CallTimeout):
        with time_limit(0.1, "spin"):
            while True:
                pass
