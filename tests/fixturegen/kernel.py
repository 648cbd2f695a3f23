"""Kernel ELF for a fixture machine: .text/.data/.bss, symbols, PT_LOAD headers."""

from __future__ import annotations

from typing import Dict, List, Optional

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
from .machine import Machine


def write_kernel(m: Machine, path: str, text_va: int, data_va: int, data: bytes,
                 bss_va: int, bss_size: int, bss_syms: Dict[str, int],
                 abs_syms: Optional[Dict[str, int]] = None, phdrs: bool = True) -> None:
    """Write a kernel ELF: ``version`` (and ``data``) live in .data at data_va,
    ``bss_syms`` {name: va} in .bss, ``abs_syms`` are SHN_ABS (e.g. kernbase)."""
    ident = ElfIdent(m.spec.bits, m.spec.little, m.spec.e_machine)
    secs = [
        Section(".text", flags=SHF_ALLOC | SHF_EXECINSTR, addr=text_va, data=b"\xcc" * 64),
        Section(".data", flags=SHF_ALLOC | SHF_WRITE, addr=data_va, data=data),
        Section(".bss", SHT_NOBITS, SHF_ALLOC | SHF_WRITE, addr=bss_va, data=None,
                size=bss_size),
    ]
    syms: List[Symbol] = [Symbol("btext", text_va, 64, ".text", stype=STT_FUNC),
                          Symbol("version", data_va, len(data), ".data")]
    for name, va in sorted(bss_syms.items(), key=lambda kv: kv[1]):
        syms.append(Symbol(name, va, 8 if m.spec.bits == 64 else 4, ".bss"))
    for name, va in (abs_syms or {}).items():
        syms.append(Symbol(name, va, 0, None))
    segs = [Segment(flags=5, section=".text"), Segment(flags=6, section=".data")] if phdrs \
        else []
    with open(path, "wb") as f:
        f.write(build_kernel_elf(ident, secs, syms, segs, entry=text_va))
