"""riscv fixtures: minidumps v1/v2 (formats.md §5.3), Sv39 or Sv48 kernel.

The writer emits one 4 KiB page of L3 PTEs per 2 MiB of KVA from kernbase; an
L2 superpage becomes a synthesized page with entry i = L2 | (i << 10). The
kernel-map layout (and therefore the file) is the same for Sv39 and Sv48; the
``mode`` option only selects which superpage size the kernel image uses
(Sv48 kernels here also get a 1 GiB L1 leaf, split into 512 L2 steps).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from .machine import EXECUTE, G1, K4, M2, READ, RW, WRITE
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
from .profiles import map_kernel_image, ram_specials

EM_RISCV = 243
KERNBASE = 0xFFFFFFC000000000      # KERNBASE == VM_MIN_KERNEL_ADDRESS
DMAP_MIN, DMAP_MAX = 0xFFFFFFD000000000, 0xFFFFFFF000000000
RAM = [(0x80000000, 0x80900000), (0x80A00000, 0xC0400000)]
DMAP_PHYS = RAM[0][0]
V, R_, W, X, A, D, G = 0x1, 0x2, 0x4, 0x8, 0x40, 0x80, 0x20


def pte(pa: int, prot: int) -> int:
    e = ((pa >> 12) << 10) | V | A | G | R_
    if prot & WRITE:
        e |= W | D
    if prot & EXECUTE:
        e |= X
    return e


def profile(fmt: str, version: int, options: Dict[str, object]):
    mode = str(options.get("mode", "sv39"))
    ram = list(options.get("dump_avail") or RAM)  # type: ignore[call-overload]
    m = XMachine("riscv", 4096, ram, KERNBASE, DMAP_MIN, DMAP_MAX, DMAP_PHYS,
                 pattern=str(options.get("pattern", "addr")),
                 xspec=XSpec("riscv", 64, True, EM_RISCV, b"minidump FreeBSD/riscv",
                             KERNBASE, int(options.get("e_flags", 0))))
    pr = new_profile(m, b"riscv.riscv64", 1000)
    data_pa = map_kernel_image(pr, KERNBASE, DMAP_PHYS + M2, M2, K4, "l2_super")
    pr.abs_syms["kernbase"] = KERNBASE
    kva = KERNBASE + 2 * M2
    kmap_pages(pr, kva, data_pa + 0x40000)
    top, gap = ram_specials(pr, ram, kva + 16 * K4, data_pa + 0x50000, options)
    if mode == "sv48":
        g = KERNBASE + G1
        m.map(g, 0x80000000, G1, RW, populate=(0, 1, 600, -1))
        pr.point("l1_super", g + 0x10, 0x30)
        pr.point("l1_super_cross", g + K4 - 8, 16)
        pr.point("l1_super_last", g + G1 - 16, 16)
        pr.point("l1_super_unpopulated", g + 0x200000, 8)
    for pa in (DMAP_PHYS + 0x100000, DMAP_PHYS + 0x101000, ram[1][0], top - 2 * K4):
        m.populate(pa)
        m.dmap_dump.add(pa // K4)
    dva = m.dmap_va
    pr.point("dmap", dva(DMAP_PHYS + 0x100000) + 0x18, 0x20)
    pr.point("dmap_cross", dva(DMAP_PHYS + 0x101000) - 8, 16)
    pr.point("dmap_kernel_page", dva(data_pa) + 0x100, 0x10)
    pr.point("dmap_last", dva(top) - 8, 8)
    pr.point("dmap_gap", dva(gap + K4), 8)
    pr.point("dmap_below_phys", DMAP_MIN - K4, 8)
    pr.point("below_kernbase", KERNBASE - K4, 8)
    pr.notes["mode"] = mode
    return pr


def _pmap(m: XMachine) -> Tuple[bytes, List[List[int]]]:
    kva_end = -(-max(m.kmap_end(), KERNBASE + M2) // M2) * M2
    ents = [0] * ((kva_end - KERNBASE) // K4)
    extra: List[List[int]] = []
    for mp in m.mappings:
        i0 = (mp.va - KERNBASE) // K4
        if mp.size == K4:
            ents[i0] = pte(mp.pa, mp.prot)
        else:   # L2 (or L1) leaf: synthesized pages, entry i = leaf | (i << 10)
            leaf = pte(mp.pa, mp.prot)
            for i in range(mp.size // K4):
                ents[i0 + i] = leaf | (i << 10)
        extra += m.populated_in(mp.pa // K4, (mp.pa + mp.size) // K4)
    return pack(m, f"{len(ents)}Q", *ents), extra


def _decode(e: int, va: int) -> Optional[Tuple[int, int, int]]:
    if not e & V or not e & (R_ | W | X):
        return None
    pa = (e >> 10) << 12
    prot = READ | (WRITE if e & W else 0) | (EXECUTE if e & X else 0)
    return pa, DMAP_MIN + pa, prot


def build(arch: str, fmt: str, version: int, tmpdir: str, options: Dict[str, object]):
    if fmt != "minidump":
        raise ValueError("riscv has minidumps only")
    pr = profile(fmt, version, options)
    kpath, cpath = paths(tmpdir, f"riscv-minidump{version}-{pr.notes['mode']}")
    return write(pr, version, kpath, cpath, options)


def write(pr, version: int, kpath: str, cpath: str, options: Dict[str, object]):
    """Write kernel + minidump of a riscv profile; returns the Fixture."""
    from . import Fixture

    m: XMachine = pr.m  # type: ignore[assignment]
    kst = install_kstate(pr, options)
    write_kernel_x(m, kpath, pr, kst)
    pmap, extra = _pmap(m)

    def header(h: Dict[str, int]) -> bytes:
        b = pack(m, "24sIIIIQQQQ", m.spec.magic, version, h["msgbufsize"], h["bitmapsize"],
                 h["pmapsize"], KERNBASE, DMAP_PHYS, DMAP_MIN, DMAP_MAX)
        if version >= 2:
            b += pack(m, "II", h["dumpavailsize"], 0)
        return b

    hdr = {"kernbase": KERNBASE, "dmapphys": DMAP_PHYS, "dmapbase": DMAP_MIN,
           "dmapend": DMAP_MAX}
    lay = write_minidump_x(m, cpath, version, version >= 2, header, hdr, pmap, 8, extra, 64,
                           options.get("msgbuf"), truncation(options, K4))  # type: ignore
    lay.walk = flat_walk(lay, True, KERNBASE, 12, _decode)
    man = manifest(pr, "minidump", version, lay, lambda va: page_state_md(m, lay, va))
    return Fixture("riscv", "minidump", version, kpath, cpath, man, m, lay, pr, dict(options))


CASES = [("riscv", "minidump", v, {"mode": mode}) for v in (1, 2) for mode in ("sv39", "sv48")]
