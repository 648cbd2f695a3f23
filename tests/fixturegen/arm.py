"""arm (32-bit) fixtures: minidumps v1/v2 (ARMv4 or ARMv6 PTEs) and ELF full dumps
(formats.md §5.2, §6.5), little- or big-endian.

Kernel-map page kinds: a 1 MiB section (kernel image), 64 KiB large pages, 4 KiB
small pages (ARMv6: XN small pages are type 3), and on ARMv4 one tiny (1 KiB)
entry the reader must refuse. The minidump writer's PTE array has one 4-byte
entry per 4 KiB from KERNBASE (sections split into small-page entries); the ELF
dump carries real L1/L2 tables and a PT_DUMP_DELTA header.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from .elfcore import ElfCoreLayout, write_elfcore
from .elfwriter import Segment
from .machine import EXECUTE, K4, READ, RW, RWX, RX, WRITE
from .multiarch import (
    XMachine,
    XSpec,
    flat_walk,
    install_kstate,
    kmap_pages,
    manifest,
    new_profile,
    pack,
    page_state_md,
    paths,
    truncation,
    write_kernel_x,
    write_minidump_x,
)
from .profiles import _kernel_vars, ram_specials

EM_ARM = 40
KERNBASE, PHYSADDR = 0xC0000000, 0x80000000
RAM = [(0x80000000, 0x80900000), (0x80A00000, 0x81000000)]
M1, K64 = 1 << 20, 1 << 16
PT_DUMP_DELTA = 0x6FB5D000
TINY = "tiny"


def spec(little: bool, e_flags: int = 0) -> XSpec:
    return XSpec("arm" if little else "armeb", 32, little, EM_ARM, b"minidump FreeBSD/arm",
                 KERNBASE, e_flags)


# ------------------------------------------------------------------- entries
def l2_entry(pa: int, prot: int, v4: bool, large: bool = False) -> int:
    """An L2 descriptor: type 1 (64 KiB) or 2/3 (4 KiB; ARMv6 type 3 = small + XN)."""
    if v4:
        ap = 0x30 if prot & WRITE else 0x20           # AP0 bit 4 = write (xscale)
        return pa | ap | (1 if large else 2)
    e = pa | 0x10                                     # AP0: kernel access
    if not prot & WRITE:
        e |= 0x80                                     # PTE2_RO (L2_TEX1)
    if large:
        return e | 1
    return e | (3 if not prot & EXECUTE else 2)


def arm_prot(e: int, v4: bool) -> int:
    """libkvm's _arm_entry_to_prot."""
    if v4:
        return READ | (WRITE if e & 0x10 else 0)
    return READ | (0 if e & 0x80 else WRITE) | (0 if e & 1 else EXECUTE)


# ------------------------------------------------------------------- profile
def profile(fmt: str, version: int, options: Dict[str, object]):
    little = str(options.get("endian", "le")) == "le"
    v4 = str(options.get("mmu", "v6")) == "v4"
    ram = list(options.get("dump_avail") or RAM)  # type: ignore[call-overload]
    m = XMachine("arm", 4096, ram, KERNBASE, pattern=str(options.get("pattern", "addr")),
                 xspec=spec(little, int(options.get("e_flags", 0))))
    pr = new_profile(m, b"arm.armv7" if not v4 else b"arm.armv5")
    m.meta["v4"] = v4
    # Kernel image: one 1 MiB section at KERNBASE -> PHYSADDR.
    pr.text_va = KERNBASE
    m.map(KERNBASE, PHYSADDR, M1, RWX, populate=(0, 1, 2, -1))
    m.meta["kinds"] = {KERNBASE: "section"}
    pr.point("section", KERNBASE + 0x345, 0x40)
    pr.point("section_cross", KERNBASE + K4 - 8, 16)
    pr.point("section_last", KERNBASE + M1 - 8, 8)
    pr.point("section_unpopulated", KERNBASE + 5 * K4, 8)
    data = KERNBASE + M1
    for i in range(4):
        m.map(data + i * K4, PHYSADDR + M1 + i * K4, K4, RW)
        m.populate(PHYSADDR + M1 + i * K4)
    _kernel_vars(pr, data, ["kernel_l1pa"])
    pr.abs_syms.update(kernbase=KERNBASE, physaddr=PHYSADDR)
    kva = KERNBASE + 0x1000000
    kmap_pages(pr, kva, PHYSADDR + 0x300000, (RW, READ, RX, RWX), "small_4k")
    big = kva + 0x10000
    m.map(big, PHYSADDR + 0x400000, K64, RW, populate=(0, 1, 7, -1))
    m.map(big + K64, PHYSADDR + 0x420000, K64, READ, populate=(0,))
    m.meta["kinds"][big] = m.meta["kinds"][big + K64] = "large"
    pr.point("large_64k", big + 7 * K4 + 0x10, 0x20)
    pr.point("large_64k_cross", big + K4 - 4, 8)
    pr.point("large_64k_last", big + K64 - 8, 8)
    pr.point("large_64k_boundary", big + K64 - 8, 16)
    pr.point("large_64k_unpopulated", big + 3 * K4, 8)
    ram_specials(pr, ram, kva + 0x100000, PHYSADDR + 0x310000, options)
    if v4 and fmt == "minidump":
        m.meta["tiny_va"] = kva + 0x40000
        pr.point(TINY, kva + 0x40000 + 8, 8)
    pr.point("below_kernbase", KERNBASE - K4, 8)
    pr.notes.update(mmu="v4" if v4 else "v6", endian="le" if little else "be")
    return pr


# ------------------------------------------------------------------ minidump
def _pmap(m: XMachine, v4: bool) -> Tuple[bytes, List[List[int]]]:
    kva_end = -(-max(m.kmap_end(), KERNBASE + M1) // M1) * M1
    ents = [0] * ((kva_end - KERNBASE) // K4)
    extra: List[List[int]] = []
    for mp in m.mappings:
        i0 = (mp.va - KERNBASE) // K4
        if mp.size == K64:
            for k in range(16):
                ents[i0 + k] = l2_entry(mp.pa, mp.prot, v4, large=True)
        else:   # 4 KiB pages and sections (split like pmap_dump_kextract)
            for k in range(mp.size // K4):
                ents[i0 + k] = l2_entry(mp.pa + k * K4, mp.prot, v4)
        extra += m.populated_in(mp.pa // K4, (mp.pa + mp.size) // K4)
    if "tiny_va" in m.meta:
        i = (m.meta["tiny_va"] - KERNBASE) // K4  # type: ignore[operator]
        ents[i] = (PHYSADDR + 0x320000) | 0x30 | 3
        m.populate(PHYSADDR + 0x320000)
        extra.append([(PHYSADDR + 0x320000) // K4, (PHYSADDR + 0x320000) // K4 + 1])
    return pack(m, f"{len(ents)}I", *ents), extra


def _walk_decode(v4: bool):
    def decode(e: int, va: int) -> Optional[Tuple[int, int, int]]:
        t = e & 3
        if t == 0 or (t == 3 and v4):
            return None
        pa = (e & 0xFFFF0000) + (va & 0xF000) if t == 1 else e & 0xFFFFF000
        return pa, 0, arm_prot(e, v4)
    return decode


def _header(m: XMachine, version: int, v4: bool):
    def header(h: Dict[str, int]) -> bytes:
        b = pack(m, "24sIIIIIII", m.spec.magic, version, h["msgbufsize"], h["bitmapsize"],
                 h["pmapsize"], h["kernbase"], h["arch"], h["mmuformat"])
        if version >= 2:
            b += pack(m, "I", h["dumpavailsize"])
        return b
    return header


def _state_md(pr, lay):
    m = pr.m

    def state(va: int):
        if m.meta.get("tiny_va") is not None and va & ~0xFFF == m.meta["tiny_va"]:
            return TINY, None
        return page_state_md(m, lay, va)
    return state


# ------------------------------------------------------------------------ ELF
def build_tables(m: XMachine, v4: bool) -> int:
    """Real L1 (16 KiB) + coarse L2 tables in RAM; returns the L1 physical address."""
    l1 = PHYSADDR + 0x200000
    nxt = [l1 + 0x4000]
    tables: Dict[int, int] = {}

    def put(pa: int, val: int) -> None:
        m.write_pa(pa, val.to_bytes(4, "little" if m.spec.little else "big"))

    m.write_pa(l1, bytes(0x4000))
    for mp in m.mappings:
        if mp.size == M1:
            put(l1 + (mp.va >> 20) * 4, mp.pa | 0x400 | 2)
            continue
        idx = mp.va >> 20
        if idx not in tables:
            tables[idx] = nxt[0]
            m.write_pa(nxt[0], bytes(0x400))
            nxt[0] += 0x400
            put(l1 + idx * 4, tables[idx] | 1)
        base = tables[idx]
        if mp.size == K64:
            for k in range(16):
                put(base + (((mp.va >> 12) & 255) + k) * 4,
                    l2_entry(mp.pa, mp.prot, v4, large=True))
        else:
            put(base + ((mp.va >> 12) & 255) * 4, l2_entry(mp.pa, mp.prot, v4))
    return l1


def _write_elf(m: XMachine, path: str, delta: bool, trunc: Optional[int]) -> ElfCoreLayout:
    extra = [Segment(PT_DUMP_DELTA, 0, 0, KERNBASE, PHYSADDR, 0, 0, 0)] if delta else []
    return write_elfcore(m, path, trunc, extra)


def _state_elf(m: XMachine, lay: ElfCoreLayout):
    def state(va: int):
        pa = m.va_to_pa(va)
        if pa is None:
            return "unmapped", None
        if not m.in_dump_avail(pa):
            return ("beyond_ram" if pa >= max(e for _, e in m.dump_avail) else "gap"), None
        if not lay.present(pa):
            return "truncated", None
        pfn = pa // K4
        return None, (m.page(pfn) if m.is_populated(pfn) else bytes(K4))
    return state


# ---------------------------------------------------------------------- build
def build(arch: str, fmt: str, version: int, tmpdir: str, options: Dict[str, object]):
    from . import Fixture

    pr = profile(fmt, version, options)
    m: XMachine = pr.m  # type: ignore[assignment]
    v4 = bool(m.meta["v4"])
    tag = f"arm-{fmt}{version if fmt == 'minidump' else ''}-{pr.notes['mmu']}-" \
          f"{pr.notes['endian']}"
    kpath, cpath = paths(tmpdir, tag)
    trunc = truncation(options, K4)
    if fmt == "elf":
        l1 = build_tables(m, v4)
        l1_value = l1 if v4 else l1 - PHYSADDR + KERNBASE   # ARMv6 stores the VA
        m.put_word(pr.bss_syms["kernel_l1pa"], l1_value, 4)
        pr.notes.update(l1pa=l1, kernel_l1pa=l1_value)
        write_kernel_x(m, kpath, pr)
        lay = _write_elf(m, cpath, bool(options.get("delta", True)), trunc)
        man = manifest(pr, fmt, 0, lay, _state_elf(m, lay))
        return Fixture("arm", fmt, 0, kpath, cpath, man, m, lay, pr, dict(options))
    kst = install_kstate(pr, options)
    write_kernel_x(m, kpath, pr, kst)
    pmap, extra = _pmap(m, v4)
    hdr = {"kernbase": KERNBASE, "arch": 5 if v4 else 7, "mmuformat": 1 if v4 else 2}
    if options.get("mmuformat") is not None:
        hdr["mmuformat"] = int(options["mmuformat"])  # type: ignore[call-overload]
    lay = write_minidump_x(m, cpath, version, version >= 2, _header(m, version, v4), hdr,
                           pmap, 4, extra, 32, options.get("msgbuf"),  # type: ignore[arg-type]
                           trunc, bool(options.get("dump_avail_32")))
    lay.walk = flat_walk(lay, m.spec.little, KERNBASE, 12, _walk_decode(v4))
    man = manifest(pr, fmt, version, lay, _state_md(pr, lay))
    return Fixture("arm", fmt, version, kpath, cpath, man, m, lay, pr, dict(options))


CASES = [("arm", "minidump", v, {"mmu": mmu, "endian": en})
         for v in (1, 2) for mmu in ("v4", "v6") for en in ("le", "be")] + \
        [("arm", "elf", 0, {"mmu": mmu, "endian": en, "delta": d})
         for mmu in ("v4", "v6") for en in ("le", "be") for d in (True, False)]
