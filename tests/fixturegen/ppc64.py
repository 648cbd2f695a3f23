"""powerpc fixtures (formats.md §5.4, §6.6):

* powerpc64 minidumps v1/v2, HPT (``mmu="mmu_g5"``/``"mmu_phyp"``: the pmap section
  is the hashed page table, 65536 PTEGs so EAs are fully recoverable) or radix
  (``mmu="mmu_radix"``: the 64 KiB root table; lower tables in dumped pages), big-
  or little-endian kernel (header in the kernel's order, table entries big-endian).
  The PIE kernel runs displaced: startkernel - 0x100100 is kvm_kerndisp.
* ELF "virtual" cores of powerpc (32-bit BE) and powerpc64 (BE/LE): one PT_LOAD per
  run of kernel virtual memory, p_paddr all-ones; optional 512-byte
  kerneldumpheader in front (``kdh=True``); ``raw=True`` writes a physical full dump
  (p_vaddr all-ones) that libkvm opens but cannot read.
"""

from __future__ import annotations

import struct
from typing import Dict, List, Optional, Tuple

from .elfwriter import CoreChunk, ElfIdent, core_header, core_layout
from .machine import EXECUTE, G1, K4, M2, READ, RW, RWX, WRITE
from .minidump import WalkRecord
from .multiarch import (
    XMachine,
    XSpec,
    install_kstate,
    kmap_pages,
    manifest,
    new_profile,
    offset_or_minus1,
    pack,
    page_state_md,
    paths,
    scatter,
    truncation,
    write_kernel_x,
    write_minidump_x,
)
from .profiles import _kernel_vars, ram_specials

EM_PPC, EM_PPC64 = 20, 21
PPC64_KERNBASE = 0x100100
DMAP_BASE, DMAP_END_HDR = 0xC000000000000000, 0xC003FFFFFFFFFFFF
KERNBASE, KERNEND = 0xC008000000000000, 0xC0080007FFFFFFFF
RAM = [(0, 0x3000000), (0x3100000, 0x8000000)]
LOAD_PA = 0x1000000
STARTKERNEL = DMAP_BASE + LOAD_PA + 0x100
NPTEGS = 1 << 16
M16 = 1 << 24


def kernel_vsid(esid: int) -> int:
    return ((((esid << 8) | (esid >> 28)) * 0x13BB) & ((1 << 36) - 1)) | (1 << 36)


# --------------------------------------------------------------------- HPT
class Hpt:
    """A hashed page table being filled like the kernel's moea64 code would."""

    def __init__(self, nptegs: int) -> None:
        self.n = nptegs
        self.ptes: Dict[int, Tuple[int, int]] = {}
        self.ea: Dict[int, Tuple[int, int, int]] = {}   # ptex -> (ea, pa, size)

    def insert(self, ea: int, vsid: int, pa: int, lo_bits: int, large: bool,
               prefer_secondary: bool = False) -> int:
        b = 24 if large else 12
        page = (ea & 0x0FFFFFFF) >> b
        ava = (page >> 11) if b == 12 else (page << 1)      # AVA page bits (PTEH 52:56)
        for hid in ((2, 0) if prefer_secondary else (0, 2)):
            h = (vsid & 0x7F_FFFF_FFFF) ^ page
            if hid:
                h = ~h & 0x7F_FFFF_FFFF
            g = (h & (self.n - 1)) * 8
            for ptex in range(g, g + 8):
                if ptex in self.ptes:
                    continue
                hi = (vsid << 12) | ((ava & 0x1F) << 7) | (4 if large else 0) | hid | 1
                frame = pa & (0x0FFFFFFFFF000000 if large else 0x0FFFFFFFFFFFF000)
                self.ptes[ptex] = (hi, frame | lo_bits)
                self.ea[ptex] = (ea, frame, M16 if large else K4)
                return ptex
        raise RuntimeError("PTEG full")

    def data(self) -> bytes:
        out = bytearray(self.n * 128)
        for ptex, (hi, lo) in self.ptes.items():
            struct.pack_into(">QQ", out, ptex * 16, hi, lo)
        return bytes(out)


def hpt_lo(prot: int) -> int:
    lo = 0x10 | (0x2 if prot & WRITE else 0x3)      # M | PP (RW: 0b10, RO: 0b11)
    if not prot & EXECUTE:
        lo |= 0x4                                  # N (no-execute)
    return lo


# ------------------------------------------------------------------- radix
RV, RL = 1 << 63, 1 << 62


def radix_leaf(pa: int, prot: int) -> int:
    e = RV | RL | pa | 0x100 | 0x80 | 0x8 | 0x4    # R/C, privileged, EAA read
    if prot & WRITE:
        e |= 0x2
    if prot & EXECUTE:
        e |= 0x1
    return e


def build_radix(m: XMachine) -> Tuple[bytes, List[int]]:
    """Root table (the pmap section) + lower tables in RAM; returns (root, table pas)."""
    root = [0] * 8192
    tables: List[int] = []

    def sub(e: int) -> Tuple[int, int]:
        """(table pa, entry) under entry e, allocating the table when e is invalid."""
        if e & RV:
            return e & 0x00FFFFFFFFFFFF00, e
        pa = m.alloc_page()
        tables.append(pa)
        return pa, RV | pa | 9          # NLS = 9: 512 entries

    def tget(pa: int, i: int) -> int:
        return int.from_bytes(m.read_pa(pa + i * 8, 8) or bytes(8), "big")

    def tset(pa: int, i: int, v: int) -> None:
        m.write_pa(pa + i * 8, v.to_bytes(8, "big"))

    for mp in m.mappings:
        va = mp.va
        ri, i2, i3 = (va >> 39) & 8191, (va >> 30) & 511, (va >> 21) & 511
        l2, root[ri] = sub(root[ri])
        if mp.size == G1:
            tset(l2, i2, radix_leaf(mp.pa, mp.prot))
            continue
        l3, e = sub(tget(l2, i2))
        tset(l2, i2, e)
        if mp.size == M2:
            tset(l3, i3, radix_leaf(mp.pa, mp.prot))
            continue
        l4, e = sub(tget(l3, i3))
        tset(l3, i3, e)
        tset(l4, (va >> 12) & 511, radix_leaf(mp.pa, mp.prot))
    return struct.pack(">8192Q", *root), tables


# ------------------------------------------------------------------ profile
def profile64(fmt: str, version: int, options: Dict[str, object]):
    little = str(options.get("endian", "be")) == "le"
    mmu = str(options.get("mmu", "mmu_radix"))
    ram = list(options.get("dump_avail") or RAM)  # type: ignore[call-overload]
    m = XMachine("powerpc64", 4096, ram, KERNBASE, DMAP_BASE, DMAP_BASE + (1 << 50), 0,
                 pattern=str(options.get("pattern", "addr")),
                 xspec=XSpec("powerpc64le" if little else "powerpc64", 64, little, EM_PPC64,
                             b"minidump FreeBSD/powerpc64", KERNBASE,
                             int(options.get("e_flags", 0))),
                 reloc_below=DMAP_BASE, reloc_disp=STARTKERNEL - PPC64_KERNBASE)
    pr = new_profile(m, b"powerpc.powerpc64" + (b"le" if little else b""))
    pr.text_va = PPC64_KERNBASE
    for pa in (LOAD_PA, LOAD_PA + K4):
        m.populate(pa)
    _kernel_vars(pr, 0x200000, [])          # link-time address; runs at +kerndisp
    for va in (pr.text_va, pr.data_va, pr.bss_va):
        pa = m.va_to_pa(va)
        m.dmap_dump.add(pa // K4)            # kernel image pages are dumped
    pr.point("kernel_text", pr.text_va + 0x40, 0x20)
    pr.point("kernel_text_cross", pr.text_va - 0x100 + K4 - 8, 16)
    pr.abs_syms["kernbase"] = KERNBASE
    kva = KERNBASE + 0x10000
    kmap_pages(pr, kva, 0x2000000)
    top, gap = ram_specials(pr, ram, kva + 16 * K4, 0x2100000, options)
    if mmu == "mmu_radix":
        m.map(KERNBASE + M2 * 8, 0x2200000, M2, RWX, populate=(0, 1, -1))
        pr.point("radix_2m", KERNBASE + M2 * 8 + 0x345, 0x40)
        pr.point("radix_2m_cross", KERNBASE + M2 * 8 + K4 - 8, 16)
        pr.point("radix_2m_unpopulated", KERNBASE + M2 * 8 + 5 * K4, 8)
        m.map(KERNBASE + G1, 0, G1, RW, populate=(1, 2))
        pr.point("radix_1g", KERNBASE + G1 + K4 + 0x10, 0x30)
        pr.point("radix_1g_cross", KERNBASE + G1 + 2 * K4 - 8, 16)
        pr.point("radix_1g_beyond_ram", KERNBASE + G1 + 0x10000000, 8)
        m.pt_pool = [0x2400000, 0x2500000]
    for pa in (0x5000, 0x6000, ram[1][0], top - 2 * K4):
        m.populate(pa)
        m.dmap_dump.add(pa // K4)
    pr.point("dmap", DMAP_BASE + 0x5000 + 0x18, 0x20)
    pr.point("dmap_cross", DMAP_BASE + 0x6000 - 8, 16)
    pr.point("dmap_kernel_page", DMAP_BASE + m.va_to_pa(pr.data_va) + 0x100, 0x10)
    pr.point("dmap_last", DMAP_BASE + top - 8, 8)
    pr.point("dmap_gap", DMAP_BASE + gap + K4, 8)
    pr.point("beyond_kernend", KERNEND + 1 + 0x1000, 8) if mmu != "mmu_radix" else None
    pr.notes.update(mmu=mmu, endian="le" if little else "be",
                    kerndisp=STARTKERNEL - PPC64_KERNBASE - (1 << 64))
    return pr


def _hpt_build(m: XMachine) -> Tuple[Hpt, List[List[int]]]:
    hpt = Hpt(NPTEGS)
    extra: List[List[int]] = []
    for i, mp in enumerate(m.mappings):
        vsid = kernel_vsid(mp.va >> 28)
        hpt.insert(mp.va, vsid, mp.pa, hpt_lo(mp.prot), False, prefer_secondary=i % 2 == 1)
        extra += m.populated_in(mp.pa // K4, mp.pa // K4 + 1)
    # Direct-map 16 MiB entries (hw_direct_map) and a user PTE (no kernel VSID bit).
    for pa in (0, M16):
        hpt.insert(DMAP_BASE + pa, kernel_vsid((DMAP_BASE + pa) >> 28), pa, 0x12, True)
    hpt.insert(0x10000000, 0x123, 0x3000, 0x12, False)
    return hpt, extra


def _hpt_walk(m: XMachine, hpt: Hpt, lay) -> List[WalkRecord]:
    recs = []
    for ptex in sorted(hpt.ptes):
        hi, lo = hpt.ptes[ptex]
        if not (hi >> 12) & (1 << 36):
            continue
        ea, pa, size = hpt.ea[ptex]
        prot = READ | (WRITE if lo & 2 else 0) | (EXECUTE if lo & 4 else 0)
        off = offset_or_minus1(lay, pa) if size == K4 else -1
        recs.append(WalkRecord(pa, ea, DMAP_BASE + pa, prot, off, size))
    return recs


def _radix_walk(m: XMachine, lay) -> List[WalkRecord]:
    recs = []
    for mp in sorted(m.mappings, key=lambda x: x.va):
        prot = READ | (WRITE if mp.prot & WRITE else 0) | (EXECUTE if mp.prot & EXECUTE else 0)
        recs.append(WalkRecord(mp.pa, mp.va, DMAP_BASE + mp.pa, prot,
                               offset_or_minus1(lay, mp.pa), mp.size))
    return recs


def build_minidump(version: int, tmpdir: str, options: Dict[str, object]):
    from . import Fixture

    pr = profile64("minidump", version, options)
    m: XMachine = pr.m  # type: ignore[assignment]
    mmu = str(pr.notes["mmu"])
    kpath, cpath = paths(tmpdir, f"powerpc64-minidump{version}-{mmu}-{pr.notes['endian']}")
    kst = install_kstate(pr, options)
    write_kernel_x(m, kpath, pr, kst)
    if mmu == "mmu_radix":
        pmap, tables = build_radix(m)
        extra = []
        for mp in m.mappings:
            extra += m.populated_in(mp.pa // K4, (mp.pa + mp.size) // K4)
        for t in tables:
            extra.append([t // K4, t // K4 + 1])
        missing = options.get("drop_table")
        if missing:          # leave the last L4 table page out of the dump
            m.nodump.add(tables[-1] // K4)
            pr.notes["dropped_table"] = tables[-1]
        hpt = None
    else:
        hpt, extra = _hpt_build(m)
        pmap = hpt.data()

    def header(h: Dict[str, int]) -> bytes:
        b = pack(m, "32s32sIIIIQQQQi4xQQ", m.spec.magic, mmu.encode(), version,
                 h["msgbufsize"], h["bitmapsize"], h["pmapsize"], KERNBASE, KERNEND,
                 DMAP_BASE, DMAP_END_HDR, 0 if mmu == "mmu_radix" else 1, STARTKERNEL,
                 STARTKERNEL + 0x200000)
        if version >= 2:
            b += pack(m, "I4x", h["dumpavailsize"])
        return b

    lay = write_minidump_x(m, cpath, version, version >= 2, header, {"kernbase": KERNBASE},
                           pmap, 8, extra, 64, options.get("msgbuf"),  # type: ignore
                           truncation(options, K4))
    lay.walk = _radix_walk(m, lay) if hpt is None else _hpt_walk(m, hpt, lay)
    man = manifest(pr, "minidump", version, lay, lambda va: page_state_md(m, lay, va))
    return Fixture("powerpc64", "minidump", version, kpath, cpath, man, m, lay, pr,
                   dict(options))


# ---------------------------------------------------------------- ELF cores
class VirtualCoreLayout:
    """Where each virtual chunk landed; ``prefix`` = kerneldumpheader bytes."""

    def __init__(self, segs, prefix: int, full_size: int, file_size: int) -> None:
        self.segs, self.prefix = segs, prefix
        self.full_size, self.file_size = full_size, file_size

    def offset_of_va(self, va: int) -> Optional[int]:
        for s in self.segs:
            if s.vaddr <= va < s.vaddr + s.memsz:
                return self.prefix + s.offset + va - s.vaddr
        return None


def kerneldumpheader(arch: str, length: int) -> bytes:
    h = bytearray(512)
    struct.pack_into(">20s12sII", h, 0, b"FreeBSD Kernel Dump", arch.encode(), 4, 1)
    struct.pack_into(">Q", h, 40, length)
    words = struct.unpack(">128I", h)
    par = 0
    for w in words:
        par ^= w
    struct.pack_into(">I", h, 508, par)
    return bytes(h)


def build_elf(arch: str, tmpdir: str, options: Dict[str, object]):
    from . import Fixture

    bits = 64 if arch == "powerpc64" else 32
    little = bits == 64 and str(options.get("endian", "be")) == "le"
    name = "powerpc64le" if little else arch
    kb = 0xE000000000000000 if bits == 64 else 0xC0000000
    ram = list(options.get("dump_avail") or RAM)  # type: ignore[call-overload]
    m = XMachine(arch, 4096, ram, kb, xspec=XSpec(name, bits, little,
                                                  EM_PPC64 if bits == 64 else EM_PPC,
                                                  b"", kb, int(options.get("e_flags", 0))))
    pr = new_profile(m, b"powerpc." + name.encode())
    img = 0x100000
    pr.text_va = kb + img
    text = int(options.get("image_span", K4)) // K4     # text pages (kernel state: more)
    for i in range(text + 3):
        m.map(kb + img + i * K4, img + i * K4, K4, RWX if i < text else RW)
        m.populate(img + i * K4) if i == 0 or i >= text else None
    _kernel_vars(pr, kb + img + text * K4, [])
    pr.point("kernel_text", pr.text_va + 0x40, 0x20)
    kva = kb + 0x1000000
    for i, pa in enumerate(scatter(0x400000, 6)):
        m.map(kva + i * K4, pa, K4, RW)
        m.populate(pa) if i != 4 else None          # page 4: dumped but never written
    pr.point("kmap_4k", kva + 0x123, 0x40)
    pr.point("kmap_cross", kva + 3 * K4 - 8, 16)
    pr.point("kmap_zero_page", kva + 4 * K4 + 8, 8)
    pr.point("kmap_last", kva + 6 * K4 - 8, 8)
    pr.point("unmapped", kva + 7 * K4, 8)
    pr.point("below", kb, 8)
    raw = bool(options.get("raw"))
    ones = (1 << bits) - 1
    kst = install_kstate(pr, options)
    runs = _va_runs(m)
    if raw:
        chunks = [CoreChunk(s, e - s, vaddr=ones, paddr=s) for s, e in ram]
    else:
        chunks = [CoreChunk(0, n, vaddr=va, paddr=ones) for va, n in runs]
    ident = ElfIdent(bits, little, m.spec.e_machine)
    clay = core_layout(ident, chunks, K4)
    data = bytearray(core_header(ident, clay))
    data += bytes(clay.data_start - len(data))
    for seg in clay.segments:
        for off in range(0, seg.filesz, K4):
            if raw:
                pfn = (seg.paddr + off) // K4
                page = m.page(pfn) if m.is_populated(pfn) else bytes(K4)
            else:
                page = m.read_va(seg.vaddr + off, K4) or bytes(K4)
            data += page
    kdh = bool(options.get("kdh"))
    prefix = kerneldumpheader(name, len(data)) if kdh else b""
    full = len(prefix) + len(data)
    trunc = truncation(options, K4)
    if trunc is not None and trunc < 0:
        trunc += full
    size = full if trunc is None else min(trunc, full)
    tag = f"{name}-elf{'-kdh' if kdh else ''}{'-raw' if raw else ''}"
    kpath, cpath = paths(tmpdir, tag)
    write_kernel_x(m, kpath, pr, kst)
    with open(cpath, "wb") as f:
        f.write((prefix + bytes(data))[:size])
    lay = VirtualCoreLayout(clay.segments, len(prefix), full, size)

    def state(va: int):
        if raw:
            return "raw", None
        page_va = va & ~(K4 - 1)
        off = lay.offset_of_va(page_va)
        if off is None:
            return "unmapped", None
        if off + K4 > size:
            return "truncated", None
        return None, bytes((prefix + bytes(data))[off:off + K4])

    man = manifest(pr, "elf", 0, lay, state)
    pr.notes.update(raw=raw, kdh=kdh)
    man.notes.update(raw=raw, kdh=kdh)
    return Fixture(arch, "elf", 0, kpath, cpath, man, m, lay, pr, dict(options))


def _va_runs(m: XMachine) -> List[Tuple[int, int]]:
    """(va, size) of each run of virtually contiguous kernel-map mappings."""
    runs: List[Tuple[int, int]] = []
    for mp in sorted(m.mappings, key=lambda x: x.va):
        if runs and runs[-1][0] + runs[-1][1] == mp.va:
            runs[-1] = (runs[-1][0], runs[-1][1] + mp.size)
        else:
            runs.append((mp.va, mp.size))
    return runs


def build(arch: str, fmt: str, version: int, tmpdir: str, options: Dict[str, object]):
    if fmt == "elf":
        return build_elf(arch, tmpdir, options)
    return build_minidump(version, tmpdir, options)


CASES = [("powerpc64", "minidump", v, {"mmu": mmu, "endian": en})
         for v in (1, 2) for mmu in ("mmu_g5", "mmu_phyp", "mmu_radix") for en in ("be", "le")]
ELF_CASES = [("powerpc", "elf", 0, {"kdh": k}) for k in (False, True)] + \
            [("powerpc64", "elf", 0, {"endian": en, "kdh": k})
             for en in ("be", "le") for k in (False, True)]
