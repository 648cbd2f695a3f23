"""Minidump writer (formats.md §2-§5.1): amd64 v1-v3, i386 v1-v2 (PAE or not), arm64 v1-v3.

Lays the file out like the kernel writers: header page, msgbuf, dump_avail (v with it),
bitmap, pmap, then one page per set bitmap bit in ascending order; every section is
padded to the page size P.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import pagetables as pt
from .machine import EXECUTE, K4, M2, READ, WRITE, Machine, merge_runs

# arm64 descriptor bits (formats.md §5.1)
ARM_L3_PAGE, ARM_AF, ARM_SH_IS, ARM_AP_RO = 3, 0x400, 0x300, 0x80
ARM_PXN, ARM_UXN = 1 << 53, 1 << 54
ARM_ATTR_DEFAULT = ARM_AF | ARM_SH_IS
ARM_PA_MASK = 0x0003_FFFF_FFFF_F000

# Versions that carry a dump_avail section.
HAS_DUMP_AVAIL = {"amd64": (3,), "i386": (2,), "arm64": (2, 3)}


def R(x: int, p: int) -> int:
    return (x + p - 1) // p * p


@dataclass
class WalkRecord:
    """One kvm_walk_pages callback (struct kvm_page without kp_version)."""

    paddr: int
    kmap_vaddr: int
    dmap_vaddr: int
    prot: int
    offset: int
    len: int


@dataclass
class MinidumpLayout:
    """Everything a test needs to know about a written minidump."""

    arch: str
    version: int
    page_size: int
    header: Dict[str, int]
    header_size: int
    msgbuf: bytes
    dump_avail: List[Tuple[int, int]]  # pairs written (or synthesized for old versions)
    has_dump_avail: bool
    bitmapsize: int
    pmapsize: int
    pmap: bytes
    entsize: int
    offsets: Dict[str, int]
    bit_runs: List[Tuple[int, int, int]] = field(default_factory=list)  # (bit, end, rank)
    npages: int = 0
    full_size: int = 0
    file_size: int = 0
    walk: Optional[List[WalkRecord]] = None
    pt_pages: List[int] = field(default_factory=list)  # amd64 PT pages added to bitmap

    def bit_id(self, pa: int) -> Optional[int]:
        """Spec bit id (with the start <= pa test), None if pa is in no range."""
        p, adj = self.page_size, 0
        for s, e in self.dump_avail:
            if s <= pa < e:
                return pa // p - s // p + adj
            adj += -(-e // p) - s // p
        return None

    def bit_pa(self, bit: int) -> Optional[int]:
        p = self.page_size
        for s, e in self.dump_avail:
            n = -(-e // p) - s // p
            if bit < n:
                return (s // p) * p + bit * p
            bit -= n
        return None

    def offset_of(self, pa: int) -> Optional[int]:
        """File offset the bitmap gives for the page of pa (ignores truncation)."""
        b = self.bit_id(pa)
        if b is None:
            return None
        i = bisect.bisect_right(self.bit_runs, (b, 1 << 70)) - 1
        if i < 0:
            return None
        s, e, rank = self.bit_runs[i]
        if not s <= b < e:
            return None
        return self.offsets["sparse"] + (rank + b - s) * self.page_size

    def present(self, pa: int) -> bool:
        """True if the page of pa is in the bitmap and wholly inside the file."""
        off = self.offset_of(pa)
        return off is not None and off + self.page_size <= self.file_size


def _bit_runs(lay: MinidumpLayout, pfn_runs: Sequence[Sequence[int]]) -> None:
    p, rank, out = lay.page_size, 0, []
    for s, e in pfn_runs:
        b = lay.bit_id(s * p)
        assert b is not None and lay.bit_id((e - 1) * p) == b + e - 1 - s
        out.append((b, b + e - s, rank))
        rank += e - s
    lay.bit_runs, lay.npages = out, rank


def _bitmap_bytes(lay: MinidumpLayout) -> bytes:
    v = 0
    for s, e, _ in lay.bit_runs:
        v |= ((1 << (e - s)) - 1) << s
    return v.to_bytes(lay.bitmapsize, "little")


def _split_dumpable(m: Machine, pfn_runs: List[List[int]]) -> List[List[int]]:
    """Keep pages inside dump_avail and not flagged nodump; split runs at range ends."""
    p = m.page_size
    out: List[List[int]] = []
    for s, e in pfn_runs:
        for ds, de in m.dump_avail:
            lo, hi = max(s, -(-ds // p)), min(e, de // p)
            cur = lo
            for k in sorted(x for x in m.nodump if lo <= x < hi):
                if k > cur:
                    out.append([cur, k])
                cur = k + 1
            if hi > cur:
                out.append([cur, hi])
    return merge_runs([], [tuple(r) for r in out]) if out else []


# --------------------------------------------------------------------- amd64
def _amd64(m: Machine, version: int, pml4: int) -> Tuple[bytes, List[List[int]], List[int]]:
    kva_end = R(max(m.kmap_end(), m.kernbase + M2), M2)
    extra: List[List[int]] = []
    pts: List[int] = []
    p = m.page_size
    if version == 1:
        ptes = bytearray(8 * ((kva_end - m.kernbase) // K4))
        for mp in m.mappings:
            if mp.va < m.kernbase:
                continue
            bits = pt.leaf_bits(mp.prot, True)
            for va, pa in m.iter_pages(mp):
                i = (va - m.kernbase) // K4
                ptes[8 * i:8 * i + 8] = struct.pack("<Q", pa | bits)
            extra += m.populated_in(mp.pa // p, (mp.pa + mp.size) // p)
        return bytes(ptes), extra, pts
    out = bytearray()
    nsteps = -(-(kva_end - m.kernbase) // (1 << 30))
    for step in range(nsteps):
        va = m.kernbase + (step << 30)
        e4 = pt._get(m, pml4, (va >> 39) & 511, 8)
        pdpe = pt._get(m, e4 & pt.FRAME64, (va >> 30) & 511, 8) if e4 & pt.PG_V else 0
        if not pdpe & pt.PG_V:
            out += bytes(4096)
            continue
        if pdpe & pt.PG_PS:
            out += struct.pack("<512Q", *[pdpe + j * M2 for j in range(512)])
            base = pdpe & 0x000F_FFFF_C000_0000
            extra += m.populated_in(base // p, (base + (1 << 30)) // p)
            continue
        pd = pdpe & pt.FRAME64
        page = m.page(pd // p)
        out += page
        for pde in pt.unpack_entries(page, 8):
            if not pde & pt.PG_V:
                continue
            if pde & pt.PG_PS:
                base = pde & 0x000F_FFFF_FFE0_0000
                extra += m.populated_in(base // p, (base + M2) // p)
                continue
            ptpa = pde & pt.FRAME64
            pts.append(ptpa)
            extra.append([ptpa // p, ptpa // p + 1])
            for pte in pt.unpack_entries(m.page(ptpa // p), 8):
                if pte & pt.PG_V and m.is_populated((pte & pt.FRAME64) // p):
                    extra.append([(pte & pt.FRAME64) // p, (pte & pt.FRAME64) // p + 1])
    return bytes(out), extra, pts


def _x86_prot(e: int) -> int:
    return READ | (WRITE if e & pt.PG_RW else 0) | (0 if e & pt.PG_NX else EXECUTE)


def _amd64_walk(m: Machine, lay: MinidumpLayout) -> Optional[List[WalkRecord]]:
    if lay.version < 2:
        return None
    recs: List[WalkRecord] = []
    local = set()
    dmb, dme = lay.header["dmapbase"], lay.header["dmapend"]

    def off(pa: int) -> int:
        o = lay.offset_of(pa)
        return -1 if o is None else o

    def mark(pa: int) -> None:
        b = lay.bit_id(pa)
        if b is not None:
            local.add(b)

    for d, pde in enumerate(pt.unpack_entries(lay.pmap, 8)):
        va = lay.header["kernbase"] + d * M2
        if not pde & pt.PG_V:
            continue
        if pde & pt.PG_PS:
            pa = pde & 0x000F_FFFF_FFE0_0000
            mark(pa)
            recs.append(WalkRecord(pa, va, dmb + pa, _x86_prot(pde), off(pa), M2))
            continue
        ptpa = pde & pt.FRAME64
        if not lay.present(ptpa):
            continue
        for i, pte in enumerate(pt.unpack_entries(m.page(ptpa // 4096), 8)):
            if pte & pt.PG_V:
                pa = pte & pt.FRAME64
                mark(pa)
                recs.append(WalkRecord(pa, va + i * K4, dmb + pa, _x86_prot(pte), off(pa), K4))
    for b in sorted(local):
        pa = lay.bit_pa(b)
        if pa is None or dme < dmb + pa + K4:
            break
        recs.append(WalkRecord(pa, 0, dmb + pa, READ | WRITE, off(pa), K4))
    return recs


# ---------------------------------------------------------------------- i386
def _i386(m: Machine, top: int, pae: bool) -> Tuple[bytes, List[List[int]], List[int]]:
    region = M2 if pae else 1 << 22
    esz = 8 if pae else 4
    kva_end = R(max(m.kmap_end(), m.kernbase + region), region)
    out = bytearray()
    extra: List[List[int]] = []
    frame = pt.FRAME64 if pae else pt.FRAME32
    for va in range(m.kernbase, kva_end, region):
        pde, _ = pt.i386_pde(m, top, pae, va)
        if not pde & pt.PG_V:
            out += bytes(4096)
        elif pde & pt.PG_PS:
            base = pde & frame & ~(region - 1)
            bits = pt.PG_V | pt.PG_RW | pt.PG_A | pt.PG_M
            n = 4096 // esz
            out += struct.pack(f"<{n}{'Q' if pae else 'I'}",
                               *[(base + k * K4) | bits for k in range(n)])
            extra += m.populated_in(base // K4, (base + region) // K4)
        else:
            page = m.page((pde & frame) // K4)
            out += page
            for pte in pt.unpack_entries(page, esz):
                if pte & pt.PG_V and m.is_populated((pte & frame) // K4):
                    extra.append([(pte & frame) // K4, (pte & frame) // K4 + 1])
    return bytes(out), extra, []


def _i386_walk(m: Machine, lay: MinidumpLayout, pae: bool) -> List[WalkRecord]:
    recs = []
    frame = pt.FRAME64 if pae else pt.FRAME32
    for i, e in enumerate(pt.unpack_entries(lay.pmap, lay.entsize)):
        if e & pt.PG_V:
            pa = e & frame
            o = lay.offset_of(pa)
            prot = READ | (WRITE if e & pt.PG_RW else 0)
            prot |= 0 if (pae and e & pt.PG_NX) else EXECUTE
            recs.append(WalkRecord(pa, lay.header["kernbase"] + i * K4, 0, prot,
                                   -1 if o is None else o, K4))
    return recs


# --------------------------------------------------------------------- arm64
def arm64_l3(pa: int, prot: int) -> int:
    """Kernel L3 page descriptor: UXN always (pmap_enter on kernel VAs), PXN if not X."""
    e = pa | ARM_ATTR_DEFAULT | ARM_L3_PAGE | ARM_UXN
    if not prot & WRITE:
        e |= ARM_AP_RO
    if not prot & EXECUTE:
        e |= ARM_PXN
    return e


def _arm64(m: Machine) -> Tuple[bytes, List[List[int]], List[int]]:
    p = m.page_size
    n = p // 8
    l2 = p * n
    kva_end = R(max(m.kmap_end(), m.kernbase + l2), l2)
    ents = [0] * ((kva_end - m.kernbase) // p)
    extra: List[List[int]] = []
    for mp in m.mappings:
        if mp.va < m.kernbase:
            continue
        i0 = (mp.va - m.kernbase) // p
        if mp.size == p:
            ents[i0] = arm64_l3(mp.pa, mp.prot)
        elif mp.size % l2 == 0:
            for k in range(mp.size // p):
                ents[i0 + k] = (mp.pa + k * p) | ARM_ATTR_DEFAULT | ARM_L3_PAGE
        else:
            raise ValueError(f"arm64 mapping size {mp.size:#x} unsupported")
        extra += m.populated_in(mp.pa // p, (mp.pa + mp.size) // p)
    return struct.pack(f"<{len(ents)}Q", *ents), extra, []


def _arm64_walk(m: Machine, lay: MinidumpLayout) -> List[WalkRecord]:
    recs = []
    p = lay.page_size
    for i, e in enumerate(pt.unpack_entries(lay.pmap, 8)):
        if e & 3 == 3:
            pa = e & ARM_PA_MASK
            prot = READ | (0 if e & ARM_AP_RO else WRITE)
            prot |= 0 if e & (ARM_PXN | ARM_UXN) else EXECUTE
            o = lay.offset_of(pa)
            recs.append(WalkRecord(pa, lay.header["kernbase"] + i * p,
                                   lay.header["dmapbase"] + pa, prot,
                                   -1 if o is None else o, p))
    return recs


# -------------------------------------------------------------------- header
def pack_header(arch: str, version: int, magic: bytes, h: Dict[str, int]) -> bytes:
    """The struct minidumphdr bytes (without page padding)."""
    base = struct.pack("<24sIIII", magic, version, h["msgbufsize"], h["bitmapsize"],
                       h["pmapsize"])
    if arch == "amd64":
        b = base + struct.pack("<QQQ", h["kernbase"], h["dmapbase"], h["dmapend"])
        if version >= 3:
            b += struct.pack("<II", h["dumpavailsize"], 0)
        return b
    if arch == "i386":
        b = base + struct.pack("<II", h["kernbase"], h["paemode"])
        if version >= 2:
            b += struct.pack("<I", h["dumpavailsize"])
        return b
    b = base + struct.pack("<QQQQ", h["kernbase"], h["dmapphys"], h["dmapbase"], h["dmapend"])
    if version >= 2:
        b += struct.pack("<II", h["dumpavailsize"], h.get("flags", 0) if version >= 3 else 0)
    return b


def default_msgbuf(size: int = 12216) -> bytes:
    """A recognisable message buffer of ``size`` bytes (not a multiple of the page)."""
    line = b"fixturegen: kernel message buffer line\n"
    data = b"---<<BOOT>>---\n" + line * (size // len(line) + 1)
    return data[:size]


def write_minidump(m: Machine, path: str, version: int, *, pae: bool = False,
                   pml4: int = 0, top: int = 0, msgbuf: Optional[bytes] = None,
                   truncate: Optional[int] = None, flags: int = 0) -> MinidumpLayout:
    """Write ``m`` as a minidump; ``pml4``/``top`` are the amd64/i386 table roots."""
    arch, p = m.arch, m.page_size
    msgbuf = default_msgbuf() if msgbuf is None else msgbuf
    has_da = version in HAS_DUMP_AVAIL[arch]
    if arch == "amd64":
        pmap, extra, pts = _amd64(m, version, pml4)
        entsize = 8
    elif arch == "i386":
        pmap, extra, pts = _i386(m, top, pae)
        entsize = 8 if pae else 4
    else:
        pmap, extra, pts = _arm64(m)
        entsize = 8
    dumped = _split_dumpable(m, merge_runs(sorted(m.dmap_dump), extra + [
        list(r) for r in m.dmap_dump_runs]))
    last = max(e for _, e in m.dump_avail)
    if has_da:
        da = list(m.dump_avail)
        nbits = sum(-(-e // p) - s // p for s, e in da)
        word = 4 if m.spec.bits == 32 else 8
        bitmapsize = R(-(-nbits // (8 * word)) * word, p)
    else:
        nbits = -(-last // p)
        bitmapsize = R(-(-nbits // 64) * 8, p)
        da = [(0, bitmapsize * 8 * p)]
    hdr: Dict[str, int] = {"msgbufsize": len(msgbuf), "bitmapsize": bitmapsize,
                           "pmapsize": len(pmap), "kernbase": m.kernbase}
    if arch == "amd64":
        hdr.update(dmapbase=m.dmap_base, dmapend=m.dmap_end)
    elif arch == "i386":
        hdr["paemode"] = 1 if pae else 0
    else:
        hdr.update(dmapphys=m.dmap_phys, dmapbase=m.dmap_base, dmapend=m.dmap_end)
        if version >= 3:
            hdr["flags"] = flags
    if has_da:
        hdr["dumpavailsize"] = p
    hb = pack_header(arch, version, m.spec.magic, hdr)
    offs = {"header": 0, "msgbuf": p}
    offs["dump_avail"] = p + R(len(msgbuf), p)
    offs["bitmap"] = offs["dump_avail"] + (p if has_da else 0)
    offs["pmap"] = offs["bitmap"] + bitmapsize
    offs["sparse"] = offs["pmap"] + R(len(pmap), p)
    lay = MinidumpLayout(arch, version, p, hdr, len(hb), msgbuf, da, has_da, bitmapsize,
                         len(pmap), pmap, entsize, offs, pt_pages=pts)
    _bit_runs(lay, dumped)
    lay.full_size = offs["sparse"] + lay.npages * p
    if truncate is not None and truncate < 0:
        truncate += lay.full_size
    lay.file_size = lay.full_size if truncate is None else min(truncate, lay.full_size)
    with open(path, "wb") as f:
        f.write(hb + bytes(p - len(hb)))
        f.write(msgbuf + bytes(R(len(msgbuf), p) - len(msgbuf)))
        if has_da:
            words: List[int] = []
            for s, e in da:
                words += [s, e]
            f.write(struct.pack(f"<{len(words)}Q", *words) + bytes(p - 8 * len(words)))
        f.write(_bitmap_bytes(lay))
        _write_sparse(f, pmap + bytes(R(len(pmap), p) - len(pmap)), p)
        _write_pages(f, m, dumped)
        f.truncate(lay.file_size)
    if arch == "amd64":
        lay.walk = _amd64_walk(m, lay)
    elif arch == "i386":
        lay.walk = _i386_walk(m, lay, pae)
    else:
        lay.walk = _arm64_walk(m, lay)
    return lay


def _write_sparse(f, data: bytes, p: int) -> None:
    """Write data, seeking over all-zero pages (the file stays the same logically)."""
    zero = bytes(p)
    for i in range(0, len(data), p):
        chunk = data[i:i + p]
        if chunk == zero:
            f.seek(len(chunk), 1)
        else:
            f.write(chunk)
    f.truncate(f.tell())


CHUNK_PAGES = 512


def _write_pages(f, m: Machine, runs: Sequence[Sequence[int]]) -> None:
    """Page data in bit order, written in big chunks."""
    page: Callable[[int], bytes] = m.page
    for s, e in runs:
        for c in range(s, e, CHUNK_PAGES):
            f.write(b"".join([page(x) for x in range(c, min(e, c + CHUNK_PAGES))]))
