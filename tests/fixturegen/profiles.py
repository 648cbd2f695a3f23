"""Per-(arch, format) machine layouts: small data tables plus one builder function.

Each profile returns a Machine with kernel image, data variables, extra kernel-map
mappings of every page kind, direct-map pages, a dump_avail gap page and a no-dump page,
plus named probe points used to build the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from .machine import G1, K4, M2, M4, READ, RW, RWX, RX, Machine

# ----------------------------------------------------------------- data tables
# RAM (dump_avail) per (arch, fmt). The BIOS hole [0x9f000, 0x100000) is a gap on x86.
RAM = {
    ("amd64", "minidump"): [(0, 0x9F000), (0x100000, 0xC0000000)],
    ("amd64", "elf"): [(0, 0x9F000), (0x100000, 0x900000)],
    ("i386", "minidump"): [(0, 0x9F000), (0x100000, 0x10000000)],
    ("i386", "elf"): [(0, 0x9F000), (0x100000, 0x1500000)],
    ("arm64", "minidump"): [(0x40000000, 0x4BCA0000), (0x4BD00000, 0x50000000)],
}
AMD64 = dict(KERNBASE=0xFFFFFFFF80000000, KERNLOAD=0x200000,
             VM_MIN_REAL=0xFFFFFE0000000000, VM_MIN_COMPACT=0xFFFFFFFF00000000,
             DMAP_MIN=0xFFFFF80000000000, DMAP_MAX=0xFFFFFC0000000000)
I386 = dict(KERNBASE_CLASSIC=0xC0000000, KERNBASE_12=0x800000, IMAGE_PA=0x800000)
ARM64 = dict(VM_MIN=0xFFFF000000000000, DMAP_MIN=0xFFFFA00000000000,
             DMAP_MAX=0xFFFFFF0000000000, DMAP_PHYS=0x40000000)
VERSION = (b"FreeBSD 14.0-FIXTURE #0 fixturegen: Thu Jan  1 00:00:00 UTC 2024\n"
           b"    root@fixture:/usr/obj/usr/src/%s/sys/GENERIC\n\0")


@dataclass
class Profile:
    """A machine plus the addresses the manifest builder probes."""

    m: Machine
    points: List[Tuple[str, int, int]] = field(default_factory=list)  # (kind, va, len)
    text_va: int = 0
    data_va: int = 0
    bss_va: int = 0
    bss_size: int = K4
    bss_syms: Dict[str, int] = field(default_factory=dict)
    abs_syms: Dict[str, int] = field(default_factory=dict)
    version: bytes = b""
    hz: int = 100
    notes: Dict[str, object] = field(default_factory=dict)
    pml4: int = 0
    top: int = 0

    def point(self, kind: str, va: int, n: int) -> None:
        self.points.append((kind, va, n))


def _kernel_vars(pr: Profile, data_va: int, names: List[str]) -> None:
    """Put ``version`` at data_va, and hz + ``names`` in the following (.bss) page."""
    m = pr.m
    pr.data_va, pr.bss_va = data_va, data_va + K4
    m.write_va(data_va, pr.version)
    pr.bss_syms["hz"] = pr.bss_va + 0x10C  # odd offset on purpose
    m.put_word(pr.bss_syms["hz"], pr.hz, 4)
    for i, n in enumerate(names):
        pr.bss_syms[n] = pr.bss_va + 0x200 + 8 * i
    pr.point("symbol_hz", pr.bss_syms["hz"], 4)
    pr.point("symbol_version", data_va, len(pr.version))


def _extra_4k(pr: Profile, base: int, pas: List[int], prot_cycle=(RW, READ, RX)) -> None:
    """4 KiB kernel-map pages at base, base+4K, ... mapped to (scattered) pas."""
    m = pr.m
    for i, pa in enumerate(pas):
        m.map(base + i * K4, pa, K4, prot_cycle[i % len(prot_cycle)])
    pr.point("kmap_4k", base + 0x123, 0x40)
    pr.point("kmap_4k_page", base + K4, K4)
    # Pages 2 and 3 are virtually contiguous but physically apart: crossing read.
    pr.point("kmap_4k_cross", base + 3 * K4 - 8, 16)


def _common_specials(pr: Profile, kva: int, gap_pa: int, alias_pa: int, last_pa: int,
                     nodump_pa: int, options: Dict[str, object]) -> None:
    """Gap page, no-dump page, unmapped slot and last-page mapping at kva."""
    m = pr.m
    p = m.page_size
    m.map(kva, last_pa, p, RW)
    pr.point("last_page", kva + p - 16, 16)
    if options.get("holes", True):
        m.map(kva + p, nodump_pa, p, RW)
        m.nodump.add(nodump_pa // p)
        pr.point("nodump", kva + p + 8, 8)
    pr.point("unmapped", kva + 2 * p, 8)  # left invalid inside a valid table page
    if options.get("gap_page", True):
        m.map(kva + 3 * p, gap_pa, p, RW)
        m.populate(gap_pa)
        pr.point("gap", kva + 3 * p, 8)
        m.populate(alias_pa)
        m.dmap_dump.add(alias_pa // p)
        pr.notes["gap_pa"], pr.notes["gap_alias_pa"] = gap_pa, alias_pa


def ram_specials(pr: Profile, ram: List[Tuple[int, int]], kva: int, nodump_pa: int,
                 options: Dict[str, object]) -> Tuple[int, int]:
    """_common_specials at kva: the gap page two pages past the first RAM range, the last
    page of RAM. Returns (top of RAM, gap PA)."""
    p = pr.m.page_size
    top = max(e for _, e in ram)
    gap = ram[0][1] + 2 * p
    _common_specials(pr, kva, gap, alias_pa(ram, gap, p), top - p, nodump_pa, options)
    return top, gap


def alias_pa(dump_avail: List[Tuple[int, int]], pa: int, p: int) -> int:
    """PA libkvm's buggy bit id (no start <= pa test) aliases a gap page onto."""
    adj = 0
    for s, e in dump_avail:
        if pa < e:
            idx = pa // p - s // p + adj
            break
        adj += -(-e // p) - s // p
    for s, e in dump_avail:
        n = -(-e // p) - s // p
        if idx < n:
            return (s // p) * p + idx * p
        idx -= n
    raise ValueError("no alias")


# ------------------------------------------------------------------------ amd64
def amd64(fmt: str, version: int, options: Dict[str, object]) -> Profile:
    from . import pagetables

    ram = list(options.get("dump_avail") or RAM[("amd64", fmt)])
    kb = AMD64["KERNBASE"]
    if fmt == "elf" or version == 1:
        hdr_kernbase = kb
    else:
        hdr_kernbase = AMD64["VM_MIN_REAL"] if options.get("real_kva") else \
            AMD64["VM_MIN_COMPACT"]
    m = Machine("amd64", 4096, ram, hdr_kernbase, AMD64["DMAP_MIN"], AMD64["DMAP_MAX"],
                pattern=str(options.get("pattern", "addr")))
    pr = Profile(m, version=VERSION % b"amd64.amd64", hz=int(options.get("hz", 100)))
    top = max(e for _, e in ram)
    small = fmt == "elf"
    # Kernel image: VA = KERNBASE + PA (KERNLOAD = 2 MiB), text as one 2 MiB page.
    pr.text_va = kb + AMD64["KERNLOAD"]
    m.map(pr.text_va, AMD64["KERNLOAD"], M2, RX, populate=(0, 1, -1))
    pr.point("kmap_2m", pr.text_va + 0x345, 0x40)
    pr.point("kmap_2m_cross", pr.text_va + K4 - 8, 16)
    pr.point("kmap_2m_last", pr.text_va + M2 - 8, 8)
    pr.point("kmap_2m_unpopulated", pr.text_va + 5 * K4, 8)
    for i in range(4):  # .data/.bss pages, 4 KiB, VA - KERNBASE == PA
        m.map(kb + 0x400000 + i * K4, 0x400000 + i * K4, K4, RW)
        m.populate(0x400000 + i * K4)
    m.pt_pool = [0x500000, 0x580000]
    _kernel_vars(pr, kb + 0x400000, ["KPML4phys"])
    pr.abs_syms["kernbase"] = kb
    # Extra kernel-map pages (below KERNBASE from VM_MIN, or above it for v1).
    kva = kb + 0x1000000 if hdr_kernbase == kb else hdr_kernbase + 0x200000
    pool = 0x580000 if small else 0x3000000
    _extra_4k(pr, kva, [pool + 0x7000 - i * 0x2000 for i in range(4)])
    for i in range(4):
        m.populate(pool + 0x7000 - i * 0x2000)
    big = 0x600000 if small else 0x1000000
    m.map(kva + M2, big, M2, RW, populate=(0, 1, 7, -1))
    pr.point("kmap_2m_data", kva + M2 + 7 * K4 + 0x10, 0x20)
    pr.point("kmap_2m_data_cross", kva + M2 + K4 - 4, 8)
    if fmt == "minidump" and version >= 2:
        g = hdr_kernbase + G1
        m.map(g, 0x40000000, G1, RW, populate=(0, 1, -1))
        pr.point("kmap_1g", g + 0x10, 0x30)
        pr.point("kmap_1g_cross", g + K4 - 8, 16)
        pr.point("kmap_1g_last", g + G1 - 16, 16)
        pr.point("kmap_1g_unpopulated", g + 0x200000, 8)
    gap = 0xC0000
    _common_specials(pr, kva + 2 * M2, gap, alias_pa(ram, gap, 4096), top - 4096,
                     pool + 0x10000, options)
    # Direct-map pages registered as dumpable.
    for pa in (0x5000, 0x7000, 0x8000, 0x9E000, 0x100000, top - 2 * 4096):
        m.populate(pa)
        m.dmap_dump.add(pa // 4096)
    dm = m.dmap_base
    pr.point("dmap", dm + 0x5000 + 0x18, 0x20)
    pr.point("dmap_cross", dm + 0x8000 - 8, 16)
    pr.point("dmap_kernel_page", dm + 0x400000 + 0x100, 0x10)
    pr.point("dmap_last", dm + top - 8, 8)
    pr.point("dmap_gap", dm + 0xA0000, 8)
    pr.point("dmap_partial_gap", dm + 0x9F000 - 8, 16)
    pr.point("below_kernbase", hdr_kernbase - K4, 8)
    if fmt == "elf":
        pr.point("dmap_beyond_ram", dm + top + 0x100000, 8)
    pr.pml4 = pagetables.build_amd64(m, dmap_gib=1 if fmt == "elf" else 0)
    m.put_word(pr.bss_syms["KPML4phys"], pr.pml4, 8)
    pr.notes["KPML4phys_value"] = pr.pml4
    return pr


# ------------------------------------------------------------------------- i386
def i386(fmt: str, version: int, options: Dict[str, object]) -> Profile:
    from . import pagetables

    pae = bool(options.get("pae", True))
    layout = str(options.get("layout", "fbsd12" if (fmt == "elf" or version >= 2)
                             else "classic"))
    ram = list(options.get("dump_avail") or RAM[("i386", fmt)])
    kb = I386["KERNBASE_12"] if layout == "fbsd12" else I386["KERNBASE_CLASSIC"]
    kvoff = 0 if layout == "fbsd12" else kb  # image VA = kvoff + PA
    m = Machine("i386", 4096, ram, kb, pattern=str(options.get("pattern", "addr")))
    pr = Profile(m, version=VERSION % b"i386.i386", hz=int(options.get("hz", 100)))
    sp = M2 if pae else M4
    img = I386["IMAGE_PA"]
    pr.text_va = kvoff + img
    m.map(pr.text_va, img, sp, RX, populate=(0, 1, -1))
    pr.point("kmap_super", pr.text_va + 0x345, 0x40)
    pr.point("kmap_super_cross", pr.text_va + K4 - 8, 16)
    pr.point("kmap_super_last", pr.text_va + sp - 8, 8)
    pr.point("kmap_super_unpopulated", pr.text_va + 5 * K4, 8)
    data_pa = 0xC00000
    for i in range(4):
        m.map(kvoff + data_pa + i * K4, data_pa + i * K4, K4, RW)
        m.populate(data_pa + i * K4)
    m.pt_pool = [0xC80000, 0xD00000]
    names = (["pae_mode", "IdlePTD_nopae", "IdlePDPT", "IdlePTD_pae", "tramp_idleptd"]
             if layout == "fbsd12" else ["IdlePDPT" if pae else "IdlePTD"])
    _kernel_vars(pr, kvoff + data_pa, names)
    pr.abs_syms["kernbase"] = kb
    kva = kb + 0x1800000 if layout == "fbsd12" else kb + 0x2000000
    pool = 0xD00000
    _extra_4k(pr, kva, [pool + 0x7000 - i * 0x2000 for i in range(4)])
    for i in range(4):
        m.populate(pool + 0x7000 - i * 0x2000)
    sva = kva + 0x800000
    m.map(sva, 0x1000000, sp, RW, populate=(0, 1, 7, -1))
    pr.point("kmap_super_data", sva + 7 * K4 + 0x10, 0x20)
    pr.point("kmap_super_data_cross", sva + K4 - 4, 8)
    top = max(e for _, e in ram)
    gap = 0xC0000
    _common_specials(pr, kva + 0x400000, gap, alias_pa(ram, gap, 4096), top - 4096,
                     pool + 0x10000, options)
    pr.point("below_kernbase", kb - K4, 8)
    t, ptd0 = pagetables.build_i386(m, pae)
    pr.top = t
    v = pr.bss_syms
    if layout == "fbsd12":
        m.put_word(v["pae_mode"], 1 if pae else 0, 4)
        m.put_word(v["IdlePDPT"], t if pae else 0, 4)
        m.put_word(v["IdlePTD_pae"], ptd0 if pae else 0, 4)
        m.put_word(v["IdlePTD_nopae"], 0 if pae else t, 4)
        m.put_word(v["tramp_idleptd"], 0, 4)
    else:
        m.put_word(v["IdlePDPT" if pae else "IdlePTD"], t, 4)
    pr.notes.update(pae=pae, layout=layout, table_root=t)
    return pr


def map_kernel_image(pr: Profile, kb: int, pa: int, span: int, page: int,
                     label: str) -> int:
    """The kernel image as one large mapping at ``kb`` (probes named ``label``:
    inside, crossing, last bytes, an unpopulated page) followed by four
    populated data pages that hold the kernel variables; returns their PA."""
    m = pr.m
    pr.text_va = kb
    m.map(kb, pa, span, RWX, populate=(0, 1, -1))
    pr.point(label, kb + 0x345, 0x40)
    pr.point(f"{label}_cross", kb + page - 8, 16)
    pr.point(f"{label}_last", kb + span - 8, 8)
    pr.point(f"{label}_unpopulated", kb + 5 * page, 8)
    data_pa = pa + span
    for i in range(4):
        m.map(kb + span + i * page, data_pa + i * page, page, RW)
        m.populate(data_pa + i * page)
    _kernel_vars(pr, kb + span, [])
    return data_pa


# ------------------------------------------------------------------------ arm64
def arm64(fmt: str, version: int, options: Dict[str, object]) -> Profile:
    p = 16384 if (version >= 3 and int(options.get("page_flag", 0)) == 1) else 4096
    ram = list(options.get("dump_avail") or RAM[("arm64", fmt)])
    m = Machine("arm64", p, ram, ARM64["VM_MIN"], ARM64["DMAP_MIN"], ARM64["DMAP_MAX"],
                ARM64["DMAP_PHYS"], pattern=str(options.get("pattern", "addr")))
    pr = Profile(m, version=VERSION % b"arm64.aarch64", hz=int(options.get("hz", 1000)))
    l2 = p * (p // 8)
    kb, base = ARM64["VM_MIN"], ram[0][0]
    data_pa = map_kernel_image(pr, kb, base, l2, p, "l2_block")
    pr.bss_size = p - K4
    pr.abs_syms["kernbase"] = kb
    kva = kb + 2 * l2
    pool = data_pa + 64 * p
    pas = [pool + 7 * p - i * 2 * p for i in range(4)]
    for i, pa in enumerate(pas):
        m.map(kva + i * p, pa, p, (RW, READ, RX)[i % 3])
        m.populate(pa)
    pr.point("kmap_page", kva + 0x123, 0x40)
    pr.point("kmap_page_full", kva + p, p)
    pr.point("kmap_page_cross", kva + 3 * p - 8, 16)
    top, gap = ram_specials(pr, ram, kva + 8 * p, pool + 16 * p, options)
    for pa in (base + 0x100000, base + 0x100000 + p, ram[1][0], top - 2 * p):
        m.populate(pa)
        m.dmap_dump.add(pa // p)
    dva = m.dmap_va
    pr.point("dmap", dva(base + 0x100000) + 0x18, 0x20)
    pr.point("dmap_cross", dva(base + 0x100000 + p) - 8, 16)
    pr.point("dmap_kernel_page", dva(data_pa) + 0x100, 0x10)
    pr.point("dmap_last", dva(top) - 8, 8)
    pr.point("dmap_gap", dva(gap + p), 8)
    pr.point("dmap_below_phys", m.dmap_base - p, 8)
    pr.notes["page_size"] = p
    return pr


PROFILES = {"amd64": amd64, "i386": i386, "arm64": arm64}

