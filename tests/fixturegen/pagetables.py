"""Real x86 page tables (amd64 4-level, i386 2-level / PAE) built into Machine memory."""

from __future__ import annotations

import struct
from typing import List, Optional, Tuple

from .machine import EXECUTE, G1, K4, M2, M4, WRITE, Machine

PG_V, PG_RW, PG_A, PG_M, PG_PS = 0x1, 0x2, 0x20, 0x40, 0x80
PG_NX = 1 << 63
FRAME64 = 0x000F_FFFF_FFFF_F000
FRAME32 = 0xFFFF_F000


def _get(m: Machine, table: int, idx: int, esz: int) -> int:
    pfn, off = divmod(table + idx * esz, m.page_size)
    buf = m.phys.get(pfn)  # table pages always hold explicit bytes
    return int.from_bytes(buf[off:off + esz], "little") if buf is not None else 0


def _set(m: Machine, table: int, idx: int, esz: int, val: int) -> None:
    m.write_pa(table + idx * esz, val.to_bytes(esz, "little"))


def leaf_bits(prot: int, nx_ok: bool) -> int:
    """V|A|M, RW if writable, NX (when supported) if not executable."""
    b = PG_V | PG_A | PG_M
    if prot & WRITE:
        b |= PG_RW
    if nx_ok and not prot & EXECUTE:
        b |= PG_NX
    return b


def _next(m: Machine, table: int, idx: int, esz: int, frame: int) -> int:
    """Return the next-level table under entry idx, allocating it if needed."""
    e = _get(m, table, idx, esz)
    if e & PG_V:
        return e & frame
    new = m.alloc_page()
    _set(m, table, idx, esz, new | PG_V | PG_RW | PG_A)
    return new


def build_amd64(m: Machine, dmap_gib: int = 0) -> int:
    """Build 4-level tables for all mappings (+ a 1 GiB-page direct map of ``dmap_gib``
    GiB when > 0). Returns the PML4 physical address."""
    pml4 = m.alloc_page()
    for mp in m.mappings:
        bits = leaf_bits(mp.prot, True)
        for off in range(0, mp.size, min(mp.size, G1)):
            va, pa = mp.va + off, mp.pa + off
            pdp = _next(m, pml4, (va >> 39) & 511, 8, FRAME64)
            if mp.size == G1:
                _set(m, pdp, (va >> 30) & 511, 8, pa | bits | PG_PS)
                continue
            pd = _next(m, pdp, (va >> 30) & 511, 8, FRAME64)
            if mp.size == M2:
                _set(m, pd, (va >> 21) & 511, 8, pa | bits | PG_PS)
                continue
            pt = _next(m, pd, (va >> 21) & 511, 8, FRAME64)
            _set(m, pt, (va >> 12) & 511, 8, pa | bits)
    for g in range(dmap_gib):
        va = m.dmap_base + g * G1
        pdp = _next(m, pml4, (va >> 39) & 511, 8, FRAME64)
        _set(m, pdp, (va >> 30) & 511, 8, (g * G1) | PG_V | PG_RW | PG_A | PG_M | PG_PS | PG_NX)
    return pml4


def amd64_walk(m: Machine, pml4: int, va: int) -> Tuple[List[int], Optional[int]]:
    """(table pages read, pa or None) for a 4-level walk over model memory."""
    path = [pml4]
    e = _get(m, pml4, (va >> 39) & 511, 8)
    if not e & PG_V:
        return path, None
    path.append(e & FRAME64)
    e = _get(m, e & FRAME64, (va >> 30) & 511, 8)
    if not e & PG_V:
        return path, None
    if e & PG_PS:
        return path, (e & 0x000F_FFFF_C000_0000) + (va & (G1 - 1))
    path.append(e & FRAME64)
    e = _get(m, e & FRAME64, (va >> 21) & 511, 8)
    if not e & PG_V:
        return path, None
    if e & PG_PS:
        return path, (e & 0x000F_FFFF_FFE0_0000) + (va & (M2 - 1))
    path.append(e & FRAME64)
    e = _get(m, e & FRAME64, (va >> 12) & 511, 8)
    if not e & PG_V:
        return path, None
    return path, (e & FRAME64) + (va & 0xFFF)


def build_i386(m: Machine, pae: bool) -> Tuple[int, int]:
    """Build i386 tables. Returns (top, ptd0): non-PAE top = PTD page;
    PAE top = PDPT (32 bytes at the start of its own page), ptd0 = first PD page."""
    if pae:
        pdpt = m.alloc_page()
        pds = [m.alloc_page() for _ in range(4)]
        for i, pd in enumerate(pds):
            _set(m, pdpt, i, 8, pd | PG_V)
    else:
        pdpt, pds = 0, [m.alloc_page()]
    for mp in m.mappings:
        bits = leaf_bits(mp.prot, pae)
        big = M2 if pae else M4
        for off in range(0, mp.size, min(mp.size, big)):
            va, pa = mp.va + off, mp.pa + off
            if pae:
                pd, idx, esz = pds[va >> 30], (va >> 21) & 511, 8
            else:
                pd, idx, esz = pds[0], va >> 22, 4
            if mp.size == big:
                _set(m, pd, idx, esz, pa | bits | PG_PS)
                continue
            if mp.size != K4:
                raise ValueError(f"i386 mapping size {mp.size:#x} unsupported")
            pt = _next(m, pd, idx, esz, FRAME64 if pae else FRAME32)
            _set(m, pt, (va >> 12) & (511 if pae else 1023), esz, pa | bits)
    return (pdpt if pae else pds[0]), pds[0]


def i386_pde(m: Machine, top: int, pae: bool, va: int) -> Tuple[int, int]:
    """(pde, PD page PA) for va."""
    if pae:
        pd = _get(m, top, va >> 30, 8) & FRAME64
        return _get(m, pd, (va >> 21) & 511, 8), pd
    return _get(m, top, va >> 22, 4), top


def i386_walk(m: Machine, top: int, pae: bool, va: int) -> Tuple[List[int], Optional[int]]:
    """(table pages read, pa or None) for an i386 walk over model memory."""
    pde, pd = i386_pde(m, top, pae, va)
    path = [top, pd] if pae else [top]
    if not pde & PG_V:
        return path, None
    if pde & PG_PS:
        size = M2 if pae else M4
        return path, (pde & (FRAME64 if pae else FRAME32) & ~(size - 1)) + (va & (size - 1))
    pt = pde & (FRAME64 if pae else FRAME32)
    path.append(pt)
    esz = 8 if pae else 4
    pte = _get(m, pt, (va >> 12) & (511 if pae else 1023), esz)
    if not pte & PG_V:
        return path, None
    return path, (pte & (FRAME64 if pae else FRAME32)) + (va & 0xFFF)


def unpack_entries(page: bytes, esz: int) -> Tuple[int, ...]:
    return struct.unpack(f"<{len(page) // esz}{'Q' if esz == 8 else 'I'}", page)
