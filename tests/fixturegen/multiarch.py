"""Shared machinery for the arm, riscv, mips and powerpc fixture generators.

A ``XMachine`` is the generator's Machine with its own ELF identity (class, byte
order, e_flags, e_type), direct-mapped windows (mips KSEG0/KSEG1/XKPHYS,
powerpc64 DMAP) and an optional relocation of low (link-time) addresses
(powerpc64 PIE kernels).  ``write_minidump_x`` lays a minidump out like the
kernel writers (header page, msgbuf, dump_avail, bitmap in kernel-order words,
pmap, pages); ``manifest`` derives what a correct reader must see.  Written
from formats.md, independently of kvm_dbg.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from .elfwriter import (
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    SHT_NOBITS,
    STT_FUNC,
    ElfIdent,
    Section,
    Segment,
    Symbol,
    build_kernel_elf,
)
from .machine import K4, READ, RW, RX, Machine, merge_runs
from .minidump import (
    MinidumpLayout,
    R,
    WalkRecord,
    _bit_runs,
    _split_dumpable,
    _write_pages,
    _write_sparse,
    default_msgbuf,
)
from .profiles import VERSION, Profile

M64 = (1 << 64) - 1


@dataclass(frozen=True)
class XSpec:
    """ELF identity + minidump magic of one architecture variant."""

    name: str
    bits: int
    little: bool
    e_machine: int
    magic: bytes
    kernbase: int
    e_flags: int = 0
    e_type: Optional[int] = None


@dataclass
class XMachine(Machine):
    """Machine with its own spec, direct windows and low-address relocation."""

    xspec: Optional[XSpec] = None
    windows: List[Tuple[int, int, int]] = field(default_factory=list)  # (va, end, pa mask)
    reloc_below: int = 0        # VAs below this are displaced by reloc_disp
    reloc_disp: int = 0

    @property
    def spec(self) -> XSpec:  # type: ignore[override]
        assert self.xspec is not None
        return self.xspec

    def relocate(self, va: int) -> int:
        if va < self.reloc_below:
            return (va + self.reloc_disp) & M64
        return va

    def va_to_pa(self, va: int) -> Optional[int]:
        va = self.relocate(va)
        m = self.mapping_at(va)
        if m is not None:
            return m.pa + (va - m.va)
        for start, end, mask in self.windows:
            if start <= va < end:
                return va & mask if mask else va - start
        if self.dmap_end and self.dmap_base <= va < self.dmap_end:
            return va - self.dmap_base + self.dmap_phys
        return None

    def mapping_at(self, va: int):
        return super().mapping_at(self.relocate(va))

    def order(self) -> str:
        return "little" if self.spec.little else "big"


def new_profile(m: XMachine, tag: bytes, hz: int = 100) -> Profile:
    return Profile(m, version=VERSION % tag, hz=hz)


def install_kstate(pr: Profile, options: Dict[str, object]):
    """Kernel state (kernelstate.KernelSpec in ``options["kstate"]``) written into the
    profile's machine; returns the installer's result (None without a spec).
    ``options["kstate_heap"]`` = (va, pa, superpage size) places its heap,
    ``options["kstate_globals"]`` its globals (default: in front of the heap)."""
    if options.get("kstate") is None:
        return None
    from .kernelstate import install
    if options.get("kstate_heap"):
        pr.notes["kstate_heap"] = tuple(options["kstate_heap"])  # type: ignore[arg-type]
    if options.get("kstate_globals"):
        pr.notes["kstate_globals"] = options["kstate_globals"]
    return install(pr, "", 0, options)


def write_kernel_x(m: XMachine, path: str, pr: Profile, kst=None) -> None:
    """Kernel ELF of the variant's class/order/machine/e_flags/e_type."""
    s = m.spec
    ident = ElfIdent(s.bits, s.little, s.e_machine, s.e_flags)
    secs = [Section(".text", flags=SHF_ALLOC | SHF_EXECINSTR, addr=pr.text_va,
                    data=b"\0" * 64),
            Section(".data", flags=SHF_ALLOC | SHF_WRITE, addr=pr.data_va, data=pr.version),
            Section(".bss", SHT_NOBITS, SHF_ALLOC | SHF_WRITE, addr=pr.bss_va, data=None,
                    size=pr.bss_size)]
    syms = [Symbol("btext", pr.text_va, 64, ".text", stype=STT_FUNC),
            Symbol("version", pr.data_va, len(pr.version), ".data")]
    for name, va in sorted(pr.bss_syms.items(), key=lambda kv: kv[1]):
        syms.append(Symbol(name, va, s.bits // 8, ".bss"))
    for name, va in pr.abs_syms.items():
        syms.append(Symbol(name, va, 0, None))
    segs = [Segment(flags=5, section=".text"), Segment(flags=6, section=".data")]
    with open(path, "wb") as f:
        f.write(build_kernel_elf(ident, secs, syms, segs, entry=pr.text_va, e_type=s.e_type))
    if kst is not None:       # kernel state: its sections and symbols replace these
        kst.write_kernel(path, pr)


# ------------------------------------------------------------------ minidump
def pack(m: XMachine, fmt: str, *vals) -> bytes:
    return struct.pack(("<" if m.spec.little else ">") + fmt, *vals)


def bitmap_bytes(lay: MinidumpLayout, word_bits: int, little: bool) -> bytes:
    """The bitmap as kernel words of ``word_bits`` in kernel byte order."""
    v = 0
    for s, e, _ in lay.bit_runs:
        v |= ((1 << (e - s)) - 1) << s
    if little:
        return v.to_bytes(lay.bitmapsize, "little")
    wb = word_bits // 8
    mask = (1 << word_bits) - 1
    return b"".join(((v >> (i * word_bits)) & mask).to_bytes(wb, "big")
                    for i in range(lay.bitmapsize // wb))


def write_minidump_x(m: XMachine, path: str, version: int, has_da: bool,
                     header: Callable[[Dict[str, int]], bytes], hdr: Dict[str, int],
                     pmap: bytes, entsize: int, extra: List[List[int]], word_bits: int,
                     msgbuf: Optional[bytes] = None, truncate: Optional[int] = None,
                     dump_avail_32: bool = False) -> MinidumpLayout:
    """Write ``m`` as a minidump. ``header(h)`` packs the struct from the final field
    values; ``extra`` are pfn runs the writer adds (pages mapped by the pmap)."""
    p = m.page_size
    msgbuf = default_msgbuf() if msgbuf is None else msgbuf
    dumped = _split_dumpable(m, merge_runs(sorted(m.dmap_dump), extra + [
        list(r) for r in m.dmap_dump_runs]))
    last = max(e for _, e in m.dump_avail)
    wbytes = word_bits // 8
    if has_da:
        da = list(m.dump_avail)
        nbits = sum(-(-e // p) - s // p for s, e in da)
    else:
        nbits = -(-last // p)
        da = []
    bitmapsize = R(-(-nbits // word_bits) * wbytes, p)
    if not has_da:
        da = [(0, bitmapsize * 8 * p)]
    h = dict(hdr, msgbufsize=len(msgbuf), bitmapsize=bitmapsize, pmapsize=len(pmap))
    if has_da:
        h["dumpavailsize"] = p
    hb = header(h)
    offs = {"header": 0, "msgbuf": p, "dump_avail": p + R(len(msgbuf), p)}
    offs["bitmap"] = offs["dump_avail"] + (p if has_da else 0)
    offs["pmap"] = offs["bitmap"] + bitmapsize
    offs["sparse"] = offs["pmap"] + R(len(pmap), p)
    lay = MinidumpLayout(m.arch, version, p, h, len(hb), msgbuf, da, has_da, bitmapsize,
                         len(pmap), pmap, entsize, offs)
    _bit_runs(lay, dumped)
    lay.full_size = offs["sparse"] + lay.npages * p
    if truncate is not None and truncate < 0:
        truncate += lay.full_size
    lay.file_size = lay.full_size if truncate is None else min(truncate, lay.full_size)
    with open(path, "wb") as f:
        f.write(hb + bytes(p - len(hb)))
        f.write(msgbuf + bytes(R(len(msgbuf), p) - len(msgbuf)))
        if has_da:
            words: List[int] = [w for pair in da for w in pair]
            code = "I" if dump_avail_32 else "Q"
            raw = pack(m, f"{len(words)}{code}", *words)
            f.write(raw + bytes(p - len(raw)))
        f.write(bitmap_bytes(lay, word_bits, m.spec.little))
        _write_sparse(f, pmap + bytes(R(len(pmap), p) - len(pmap)), p)
        _write_pages(f, m, dumped)
        f.truncate(lay.file_size)
    return lay


def offset_or_minus1(lay: MinidumpLayout, pa: int) -> int:
    o = lay.offset_of(pa)
    return -1 if o is None else o


def flat_walk(lay: MinidumpLayout, little: bool, base: int, shift: int,
              decode: Callable[[int, int], Optional[Tuple[int, int, int]]]) -> List[WalkRecord]:
    """Walk records of a flat PTE array: ``decode(entry, va)`` -> (pa, dmap, prot) or None."""
    recs = []
    e = "<" if little else ">"
    code = {4: "I", 8: "Q"}[lay.entsize]
    n = len(lay.pmap) // lay.entsize
    for i, ent in enumerate(struct.unpack(f"{e}{n}{code}", lay.pmap)):
        va = base + (i << shift)
        d = decode(ent, va)
        if d is not None:
            pa, dmap, prot = d
            recs.append(WalkRecord(pa, va, dmap, prot, offset_or_minus1(lay, pa), 1 << shift))
    return recs


# ------------------------------------------------------------------ manifest
def page_state_md(m: XMachine, lay: MinidumpLayout, va: int) -> Tuple[Optional[str],
                                                                       Optional[bytes]]:
    """(failure kind or None, page bytes) for a minidump page holding va."""
    p = m.page_size
    pa = m.va_to_pa(va)
    if pa is None:
        return "unmapped", None
    top = max(e for _, e in m.dump_avail)
    if not m.in_dump_avail(pa):
        return ("beyond_ram" if pa >= top else "gap"), None
    pfn = pa // p
    if pfn in m.nodump:
        return "nodump", None
    if lay.offset_of(pa) is None:
        return "not_dumped", None
    if not lay.present(pa):
        return "truncated", None
    return None, m.page(pfn)


def manifest(pr: Profile, fmt: str, version: int, lay,
             state: Callable[[int], Tuple[Optional[str], Optional[bytes]]]):
    """The Manifest of a written dump: probes, holes and partial reads of the profile's
    points, ``state(va)`` giving (failure kind or None, page bytes) per page."""
    from . import Hole, Manifest, PartialRead, Probe

    m = pr.m
    p = m.page_size
    man = Manifest(m.arch, fmt, version, p, hz_addr=pr.bss_syms["hz"], hz_value=pr.hz,
                   version_addr=pr.data_va, version_string=pr.version,
                   file_size=lay.file_size, full_size=lay.full_size, notes=dict(pr.notes))
    man.symbols = dict(pr.bss_syms, version=pr.data_va, btext=pr.text_va, **pr.abs_syms)
    if isinstance(lay, MinidumpLayout):
        man.walk, man.header, man.offsets = lay.walk, dict(lay.header), dict(lay.offsets)
        man.npages = lay.npages
    for kind, va, n in pr.points:
        got = bytearray()
        pos, why = va, None
        while pos < va + n:
            why, page = state(pos)
            if why is not None:
                break
            off = pos % p
            k = min(p - off, va + n - pos)
            got += page[off:off + k]
            pos += k
        if why is None:
            man.probes.append(Probe(va, bytes(got), kind))
        elif not got:
            man.holes.append(Hole(va, why, n))
        else:
            man.partial.append(PartialRead(va, n, bytes(got), kind, why))
    return man


def paths(tmpdir: str, tag: str) -> Tuple[str, str]:
    os.makedirs(tmpdir, exist_ok=True)
    return os.path.join(tmpdir, f"kernel-{tag}"), os.path.join(tmpdir, f"vmcore-{tag}")


def truncation(options: Dict[str, object], p: int) -> Optional[int]:
    trunc = options.get("truncate")
    if options.get("truncate_pages"):
        trunc = -int(options["truncate_pages"]) * p  # type: ignore[call-overload]
    return trunc  # type: ignore[return-value]


def scatter(base: int, n: int, step: int = 2 * K4) -> List[int]:
    """n physically scattered, descending page addresses below base + n*step."""
    return [base + (n * step - K4) - i * step for i in range(n)]


def kmap_pages(pr: Profile, kva: int, pool: int, prots: Tuple[int, ...] = (RW, READ, RX),
               kind: str = "kmap_4k") -> None:
    """Four scattered 4 KiB pages below ``pool`` mapped at kva (``prots`` cycled), and
    the probes ``kind``, ``kind``_page and ``kind``_cross into them."""
    m = pr.m
    for i, pa in enumerate(scatter(pool, 4)):
        m.map(kva + i * K4, pa, K4, prots[i % len(prots)])
        m.populate(pa)
    pr.point(kind, kva + 0x123, 0x40)
    pr.point(f"{kind}_page", kva + K4, K4)
    pr.point(f"{kind}_cross", kva + 3 * K4 - 8, 16)


__all__ = ["XSpec", "XMachine", "write_minidump_x", "manifest", "page_state_md",
           "write_kernel_x", "flat_walk", "install_kstate"]
