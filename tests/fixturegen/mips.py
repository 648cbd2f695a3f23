"""mips fixtures: minidumps v1/v2 of o32, n32 (ELF32 + EF_MIPS_ABI2) and n64
kernels, big- or little-endian (formats.md §5.5).

The kernel image and its variables live in KSEG0 (unmapped, PA = VA & 0x1fffffff);
KSEG1 and (n64) XKPHYS aliases reach the same pages. The PTE array has one
page of PTEs per NBPDR of KVA from kernbase (VM_MIN_KERNEL_ADDRESS). Bitmap words:
v1 uint32_t on every kernel (the writer's vm_page_dump); v2 a bitset of long.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from .machine import EXECUTE, K4, READ, WRITE
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

EM_MIPS, EF_MIPS_ABI2 = 8, 0x20
RAM = [(0, 0x1000000), (0x1100000, 0x4000000)]
PTE_G, PTE_V, PTE_D = 0x1, 0x2, 0x4
PTE_C_CACHE = 3 << 3
RO = {32: 1 << 29, 64: 1 << 55}
ABIS = {  # abi -> (ELF class, e_flags, PTE bits, kernbase, KSEG0, KSEG1)
    "o32": (32, 0, 32, 0xC0000000, 0x80000000, 0xA0000000),
    "n32": (32, EF_MIPS_ABI2, 64, 0xC0000000, 0x80000000, 0xA0000000),
    "n64": (64, 0, 64, 0xC000000000000000, 0xFFFFFFFF80000000, 0xFFFFFFFFA0000000),
}
XKPHYS_CACHED = 0x9800000000000000


def pte(pa: int, prot: int, bits: int) -> int:
    e = ((pa >> 12) << 6) | PTE_V | PTE_G | PTE_C_CACHE
    if prot & WRITE:
        e |= PTE_D
    else:
        e |= RO[bits]
    return e


def profile(fmt: str, version: int, options: Dict[str, object]):
    abi = str(options.get("abi", "o32"))
    little = str(options.get("endian", "be")) == "le"
    cls, flags, bits, kb, kseg0, kseg1 = ABIS[abi]
    flags |= int(options.get("e_flags", 0))
    spec = XSpec(f"mips-{abi}", cls, little, EM_MIPS, b"minidump FreeBSD/mips", kb, flags)
    windows = [(kseg0, kseg0 + 0x1FFFFFFF, 0x1FFFFFFF), (kseg1, kseg1 + 0x1FFFFFFF, 0x1FFFFFFF)]
    if cls == 64:
        windows.append((0x8000000000000000, 0xBFFFFFFFFFFFFFFF, 0xFF_FFFF_FFFF))
    ram = list(options.get("dump_avail") or RAM)  # type: ignore[call-overload]
    m = XMachine("mips", 4096, ram, kb, pattern=str(options.get("pattern", "addr")),
                 xspec=spec, windows=windows)
    m.meta.update(abi=abi, bits=bits, kseg0=kseg0, kseg1=kseg1)
    pr = new_profile(m, b"mips.mips" + abi.encode())
    # Kernel image + variables in KSEG0; the v2 writer dumps every page below
    # phys_avail[0], here the whole image.
    img = 0x100000
    pr.text_va = kseg0 + img
    data = int(options.get("data_offset", 0x8000))     # kernel state: past the text
    for pa in list(range(img, img + 0x8000, K4)) + list(range(img + data, img + data + 0x8000,
                                                              K4)):
        m.populate(pa)
        m.dmap_dump.add(pa // K4)
    _kernel_vars(pr, kseg0 + img + data, [])
    pr.point("kseg0", kseg0 + img + 0x345, 0x40)
    pr.point("kseg0_cross", kseg0 + img + K4 - 8, 16)
    pr.point("kseg1", kseg1 + img + 0x20, 0x20)
    if cls == 64:
        pr.point("xkphys", XKPHYS_CACHED | (img + 0x2000) | 0x40, 0x20)
        pr.point("xkphys_absent", XKPHYS_CACHED | 0x3000000, 8)
    pr.point("kseg0_absent", kseg0 + 0x2000000, 8)
    pr.abs_syms["kernbase"] = kb
    kva = kb + 0x10000
    kmap_pages(pr, kva, 0x400000)
    ram_specials(pr, ram, kva + 16 * K4, 0x420000, options)
    pr.point("below_kernbase_not_minidumped", 0x10000, 8)
    pr.notes.update(abi=abi, endian="le" if little else "be", pte_bits=bits)
    return pr


def _pmap(m: XMachine, bits: int) -> Tuple[bytes, List[List[int]]]:
    nbpdr = K4 * (K4 // (bits // 8))         # one page of PTEs per NBPDR of KVA
    kva_end = -(-max(m.kmap_end(), m.kernbase + nbpdr) // nbpdr) * nbpdr
    ents = [0] * ((kva_end - m.kernbase) // K4)
    extra: List[List[int]] = []
    for mp in m.mappings:
        for off in range(0, mp.size, K4):       # one PTE per page of the mapping
            ents[(mp.va + off - m.kernbase) // K4] = pte(mp.pa + off, mp.prot, bits)
        extra += m.populated_in(mp.pa // K4, (mp.pa + mp.size) // K4)
    return pack(m, f"{len(ents)}{'Q' if bits == 64 else 'I'}", *ents), extra


def _decode(bits: int):
    mask = 0x3_FFFF_FFC0 if bits == 64 else 0x1FFF_FFC0

    def decode(e: int, va: int) -> Optional[Tuple[int, int, int]]:
        if not e & PTE_V:
            return None
        prot = READ | EXECUTE | (0 if e & RO[bits] else WRITE)
        return ((e & mask) >> 6) << 12, 0, prot
    return decode


def build(arch: str, fmt: str, version: int, tmpdir: str, options: Dict[str, object]):
    from . import Fixture

    if fmt != "minidump":
        raise ValueError("mips has minidumps only")
    pr = profile(fmt, version, options)
    m: XMachine = pr.m  # type: ignore[assignment]
    bits = int(m.meta["bits"])  # type: ignore[call-overload]
    kpath, cpath = paths(tmpdir, f"mips-minidump{version}-{pr.notes['abi']}-"
                                 f"{pr.notes['endian']}")
    kst = install_kstate(pr, options)
    write_kernel_x(m, kpath, pr, kst)
    pmap, extra = _pmap(m, bits)

    def header(h: Dict[str, int]) -> bytes:
        b = pack(m, "24sIIIIQQQ", m.spec.magic, version, h["msgbufsize"], h["bitmapsize"],
                 h["pmapsize"], m.kernbase, 0, 0)
        if version >= 2:
            b += pack(m, "II", h["dumpavailsize"], 0)
        return b

    word = 64 if (version >= 2 and m.spec.bits == 64) else 32
    lay = write_minidump_x(m, cpath, version, version >= 2, header, {"kernbase": m.kernbase},
                           pmap, bits // 8, extra, word, options.get("msgbuf"),  # type: ignore
                           truncation(options, K4))
    lay.walk = flat_walk(lay, m.spec.little, m.kernbase, 12, _decode(bits))
    man = manifest(pr, fmt, version, lay, lambda va: page_state_md(m, lay, va))
    return Fixture("mips", fmt, version, kpath, cpath, man, m, lay, pr, dict(options))


CASES = [("mips", "minidump", v, {"abi": abi, "endian": en})
         for v in (1, 2) for abi in ("o32", "n32", "n64") for en in ("be", "le")]
