"""Minimal ELF writer for test fixtures: kernel executables and FreeBSD-style cores.

Written from the ELF gABI and formats.md §6.1, independently of kvm_dbg.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Dict, List, Optional, Sequence, Tuple

ET_EXEC, ET_DYN, ET_CORE = 2, 3, 4
EM_386, EM_PPC, EM_PPC64, EM_ARM, EM_X86_64, EM_AARCH64, EM_RISCV = 3, 20, 21, 40, 62, 183, 243
ELFOSABI_FREEBSD, ELFOSABI_STANDALONE = 9, 255
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOBITS = 1, 2, 3, 8
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
PT_LOAD = 1
PF_X, PF_W, PF_R = 1, 2, 4
STB_LOCAL, STB_GLOBAL = 0, 1
STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2
SHN_UNDEF, SHN_ABS = 0, 0xFFF1


def default_e_type(e_machine: int) -> int:
    """Kernel e_type libkvm expects: ET_DYN for powerpc/powerpc64, else ET_EXEC (api.md §5.1)."""
    return ET_DYN if e_machine in (EM_PPC, EM_PPC64) else ET_EXEC


@dataclass
class Section:
    """One section; ``data`` is None for SHT_NOBITS (then ``size`` is used)."""

    name: str
    sh_type: int = SHT_PROGBITS
    flags: int = SHF_ALLOC
    addr: int = 0
    data: Optional[bytes] = b""
    size: int = 0
    align: int = 16
    link: int = 0
    info: int = 0
    entsize: int = 0

    @property
    def sh_size(self) -> int:
        return self.size if self.data is None else len(self.data)


@dataclass
class Symbol:
    """``section`` is a section name, or None for SHN_ABS."""

    name: str
    value: int
    size: int = 0
    section: Optional[str] = None
    bind: int = STB_GLOBAL
    stype: int = STT_OBJECT


@dataclass
class Segment:
    """A program header. For kernels, ``section`` names the section it covers."""

    p_type: int = PT_LOAD
    flags: int = PF_R
    offset: int = 0
    vaddr: int = 0
    paddr: int = 0
    filesz: int = 0
    memsz: int = 0
    align: int = 4096
    section: Optional[str] = None


@dataclass
class ElfIdent:
    """Class (32/64), byte order and machine of an ELF file."""

    bits: int = 64
    little: bool = True
    machine: int = EM_X86_64
    flags: int = 0

    @property
    def end(self) -> str:
        return "<" if self.little else ">"


def _ehdr(ident: ElfIdent, e_type: int, osabi: int, e_version: int, entry: int, phoff: int,
          shoff: int, phnum: int, shnum: int, shstrndx: int) -> bytes:
    e = ident.end
    b64 = ident.bits == 64
    head = b"\x7fELF" + bytes([2 if b64 else 1, 1 if ident.little else 2, 1, osabi]) + bytes(8)
    ehsize, phentsize, shentsize = (64, 56, 64) if b64 else (52, 32, 40)
    fmt = e + ("HHIQQQIHHHHHH" if b64 else "HHIIIIIHHHHHH")
    return head + struct.pack(fmt, e_type, ident.machine, e_version, entry, phoff, shoff,
                              ident.flags, ehsize, phentsize if phnum else phentsize, phnum,
                              shentsize, shnum, shstrndx)


def _phdr(ident: ElfIdent, s: Segment) -> bytes:
    e = ident.end
    if ident.bits == 64:
        return struct.pack(e + "IIQQQQQQ", s.p_type, s.flags, s.offset, s.vaddr, s.paddr,
                           s.filesz, s.memsz, s.align)
    return struct.pack(e + "IIIIIIII", s.p_type, s.offset, s.vaddr, s.paddr, s.filesz,
                       s.memsz, s.flags, s.align)


def _shdr(ident: ElfIdent, name_off: int, s: Section, offset: int) -> bytes:
    e = ident.end
    fmt = e + ("IIQQQQIIQQ" if ident.bits == 64 else "IIIIIIIIII")
    return struct.pack(fmt, name_off, s.sh_type, s.flags, s.addr, offset, s.sh_size,
                       s.link, s.info, s.align, s.entsize)


def _strtab(names: Sequence[str]) -> Tuple[bytes, Dict[str, int]]:
    out = bytearray(b"\0")
    offs: Dict[str, int] = {"": 0}
    for n in names:
        if n not in offs:
            offs[n] = len(out)
            out += n.encode() + b"\0"
    return bytes(out), offs


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a if a > 1 else x


def build_kernel_elf(ident: ElfIdent, sections: List[Section], symbols: List[Symbol],
                     segments: Optional[List[Segment]] = None, entry: int = 0,
                     e_type: Optional[int] = None, osabi: int = ELFOSABI_FREEBSD) -> bytes:
    """Return the bytes of a kernel-like ELF with .symtab/.strtab/.shstrtab appended.

    Segments with ``section`` set get their offset/vaddr/sizes from that section.
    """
    e = ident.end
    b64 = ident.bits == 64
    ehsize, phentsize, shentsize = (64, 56, 64) if b64 else (52, 32, 40)
    segments = list(segments or [])
    secs = list(sections)
    # Symbol table: null symbol, then locals (none) then globals.
    strtab, soffs = _strtab([s.name for s in symbols])
    index = {s.name: i + 1 for i, s in enumerate(secs)}
    syms = bytearray(bytes(24 if b64 else 16))
    for s in symbols:
        shndx = SHN_ABS if s.section is None else index[s.section]
        info = (s.bind << 4) | s.stype
        if b64:
            syms += struct.pack(e + "IBBHQQ", soffs[s.name], info, 0, shndx, s.value, s.size)
        else:
            syms += struct.pack(e + "IIIBBH", soffs[s.name], s.value, s.size, info, 0, shndx)
    first_global = 1
    nsec = len(secs)
    secs.append(Section(".symtab", SHT_SYMTAB, 0, 0, bytes(syms), align=8,
                        link=nsec + 2, info=first_global, entsize=24 if b64 else 16))
    secs.append(Section(".strtab", SHT_STRTAB, 0, 0, strtab, align=1))
    shstr, shoffs = _strtab([s.name for s in secs] + [".shstrtab"])
    secs.append(Section(".shstrtab", SHT_STRTAB, 0, 0, shstr, align=1))
    # Layout: ehdr, phdrs, section data, section headers.
    pos = ehsize + phentsize * len(segments)
    offsets: List[int] = []
    for s in secs:
        pos = _align(pos, max(s.align, 1))
        offsets.append(pos)
        if s.sh_type != SHT_NOBITS:
            pos += s.sh_size
    shoff = _align(pos, 8)
    byname = {s.name: (s, o) for s, o in zip(secs, offsets)}
    for seg in segments:
        if seg.section is not None:
            s, o = byname[seg.section]
            seg.offset, seg.vaddr = o, s.addr
            seg.filesz = 0 if s.sh_type == SHT_NOBITS else s.sh_size
            seg.memsz = s.sh_size
    if e_type is None:
        e_type = default_e_type(ident.machine)
    out = bytearray(_ehdr(ident, e_type, osabi, 1, entry, ehsize if segments else 0, shoff,
                          len(segments), len(secs) + 1, len(secs)))
    for seg in segments:
        out += _phdr(ident, seg)
    for s, o in zip(secs, offsets):
        if s.sh_type == SHT_NOBITS:
            continue
        out += bytes(o - len(out))
        out += s.data or b""
    out += bytes(shoff - len(out))
    out += bytes(shentsize)
    for s, o in zip(secs, offsets):
        out += _shdr(ident, shoffs[s.name], s, o)
    return bytes(out)


@dataclass
class CoreChunk:
    """One physical memory chunk of an ELF core: [pa, pa+size)."""

    pa: int
    size: int
    vaddr: Optional[int] = None  # defaults to pa (powerpc full dumps use ~0)
    paddr: Optional[int] = None


@dataclass
class CoreLayout:
    """Where each chunk landed in the core file."""

    data_start: int
    segments: List[Segment] = field(default_factory=list)

    def pa_to_offset(self, pa: int) -> Optional[int]:
        """File offset of physical address ``pa`` (first matching PT_LOAD), or None."""
        for s in self.segments:
            if s.paddr <= pa < s.paddr + s.memsz:
                return pa - s.paddr + s.offset
        return None


def core_layout(ident: ElfIdent, chunks: Sequence[CoreChunk], page_size: int = 4096,
                extra: Sequence[Segment] = ()) -> CoreLayout:
    """Compute program headers like dumpsys_generic: data at R(ehdr+phdrs), back to back."""
    ehsize, phentsize = (64, 56) if ident.bits == 64 else (52, 32)
    n = len(chunks) + len(extra)
    pos = _align(ehsize + phentsize * n, page_size)
    lay = CoreLayout(pos)
    for c in chunks:
        va = c.pa if c.vaddr is None else c.vaddr
        pa = c.pa if c.paddr is None else c.paddr
        lay.segments.append(Segment(PT_LOAD, PF_R, pos, va, pa, c.size, c.size, page_size))
        pos += c.size
    lay.segments.extend(extra)
    return lay


def core_header(ident: ElfIdent, lay: CoreLayout) -> bytes:
    """ELF header + program headers of an ET_CORE file (e_version 0, OSABI 255, no sections)."""
    ehsize = 64 if ident.bits == 64 else 52
    hdr = bytearray(_ehdr(ident, ET_CORE, ELFOSABI_STANDALONE, 0, 0, ehsize, 0,
                          len(lay.segments), 0, 0))
    for s in lay.segments:
        hdr += _phdr(ident, s)
    return bytes(hdr)


def write_core(f: BinaryIO, ident: ElfIdent, lay: CoreLayout) -> None:
    """Write the core headers and zero padding up to the data start."""
    hdr = core_header(ident, lay)
    f.seek(0)
    f.write(hdr + bytes(lay.data_start - len(hdr)))
