"""The kernel image: ELF identity and the default symbol resolver.

pyelftools parses the headers and section table; the symbol table itself is
decoded in bulk with ``struct.iter_unpack`` and indexed lazily on the first
lookup, so opening a 100 MB debug kernel costs nothing until a symbol is
needed and a lookup is one dict access afterwards.
"""

from __future__ import annotations

import bisect
import errno
import mmap
import os
import struct
import threading
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from .errors import KvmError, syserr

# ELF constants used here.
ET_EXEC, ET_DYN, ET_CORE = 2, 3, 4
SHT_PROGBITS, SHT_SYMTAB, SHT_NOBITS = 1, 2, 8
SHF_WRITE, SHF_EXECINSTR = 0x1, 0x4
SHN_UNDEF, SHN_ABS, SHN_COMMON = 0, 0xFFF1, 0xFFF2
STT_NOTYPE, STT_FUNC, STT_FILE = 0, 2, 4
STB_GLOBAL, STB_WEAK = 1, 2

# a.out nlist type codes (kvm_nlist's n_type).
N_UNDF, N_EXT, N_ABS, N_TEXT, N_DATA, N_BSS, N_FN = 0x0, 0x1, 0x2, 0x4, 0x6, 0x8, 0x1F

# ELF e_machine of each architecture kvm_dbg reads, and the library's name for it
# (Kvm.arch, kvm_dbg.kstate.archdata): the one place this mapping lives.
EM_386, EM_MIPS, EM_PPC, EM_PPC64, EM_ARM, EM_X86_64, EM_AARCH64, EM_RISCV = \
    3, 8, 20, 21, 40, 62, 183, 243
ARCH_OF_MACHINE = {EM_X86_64: "amd64", EM_386: "i386", EM_AARCH64: "arm64", EM_ARM: "arm",
                   EM_RISCV: "riscv", EM_PPC64: "powerpc64", EM_PPC: "powerpc",
                   EM_MIPS: "mips"}
MACHINE_OF_ARCH = {arch: machine for machine, arch in ARCH_OF_MACHINE.items()}


@dataclass(frozen=True)
class ElfIdent:
    """The facts of an ELF header that decide the architecture backend."""

    elfclass: int      # 32 or 64
    byteorder: str     # 'little' or 'big'
    type: int
    machine: int
    flags: int
    entry: int
    osabi: int


def read_ident(data: bytes, what: str) -> ElfIdent:
    """Decode an ELF header from its first bytes, with libkvm's messages."""
    if len(data) < 16 or data[:4] != b"\x7fELF":
        raise KvmError(f"{what} is not an ELF file")
    cls = {1: 32, 2: 64}.get(data[4])
    if data[5] == 1:
        order = "little"
    elif data[5] == 2:
        order = "big"
    else:
        raise KvmError(f"unsupported ELF data encoding for {what}")
    if cls is None:
        raise KvmError(f"{what}: unsupported ELF class {data[4]}")
    need = 52 if cls == 32 else 64
    if len(data) < need:
        raise KvmError(f"{what}: truncated ELF header")
    e = "<" if order == "little" else ">"
    etype, machine = struct.unpack_from(e + "HH", data, 16)
    if cls == 32:
        entry, = struct.unpack_from(e + "I", data, 24)
        flags, = struct.unpack_from(e + "I", data, 36)
    else:
        entry, = struct.unpack_from(e + "Q", data, 24)
        flags, = struct.unpack_from(e + "I", data, 48)
    return ElfIdent(cls, order, etype, machine, flags, entry, data[7])


def read_ident_file(path: str) -> ElfIdent:
    """The ELF header of the file at ``path``; KvmError naming it otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise syserr(path, e.errno or errno.EIO, path=path) from None
    try:
        return read_ident(head, "kernel")
    except KvmError as e:
        raise KvmError(e.message, path=path) from None


def arch_of_machine(machine: int) -> Optional[str]:
    """The library's architecture name for an ELF e_machine (None: unsupported)."""
    return ARCH_OF_MACHINE.get(machine)


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int


class KernelImage:
    """A kernel ELF file: identity, sections and a lazily built symbol index."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise syserr(path, e.errno or errno.EIO, path=path) from None
        try:
            st = os.fstat(fd)
            if not os.path.isfile(path) or st.st_size == 0:
                raise KvmError("kernel is not an ELF file", path=path)
            self.file_size = st.st_size
            self._mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            if isinstance(e, KvmError):
                raise
            raise KvmError(f"cannot map kernel: {e}", path=path) from None
        finally:
            os.close(fd)
        try:
            self.ident = read_ident(self._mm[:64], "kernel")
        except KvmError as e:
            self.close()
            raise KvmError(e.message, path=path) from None
        self._sections: Optional[List[Section]] = None
        self._index: Optional[Dict[str, Tuple[int, int, int]]] = None
        self._code: Optional[Tuple[List[int], List[Tuple[int, int, str]]]] = None
        self._lock = threading.Lock()

    def close(self) -> None:
        mm, self._mm = self._mm, None
        if mm is not None:
            mm.close()

    # -- sections ---------------------------------------------------------
    @property
    def sections(self) -> List[Section]:
        """Section headers (empty for a kernel without them), parsed once."""
        if self._sections is None:
            self._sections = self._parse_sections()
        return self._sections

    def _parse_sections(self) -> List[Section]:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        try:
            elf = ELFFile(_MmapStream(self._mm))
            out = []
            for s in elf.iter_sections():
                h = s.header
                out.append(Section(s.name, _sh_type(h["sh_type"]), h["sh_flags"],
                                   h["sh_addr"], h["sh_offset"], h["sh_size"],
                                   h["sh_link"]))
            return out
        except (ELFError, struct.error, ValueError, KeyError, IndexError, TypeError,
                AttributeError, AssertionError, UnicodeDecodeError, OverflowError) as e:
            raise KvmError(f"kernel: bad ELF section table ({e})", path=self.path) from None

    # -- symbols ----------------------------------------------------------
    def _build_index(self) -> Dict[str, Tuple[int, int, int]]:
        """name -> (value, nlist type, size) from the FIRST SHT_SYMTAB, as libc's
        nlist; also collects the code symbols for ``function_at``."""
        secs = self.sections
        index: Dict[str, Tuple[int, int, int]] = {}
        code: List[Tuple[int, int, str]] = []
        self._code = ([], code)
        symtab = next((s for s in secs if s.type == SHT_SYMTAB), None)
        if symtab is None:
            return index
        link = symtab.link
        if not (0 <= link < len(secs)):
            return index
        strtab = secs[link]
        end = self.file_size
        if not (0 <= strtab.offset <= end and strtab.offset + strtab.size <= end):
            raise KvmError("kernel: string table beyond end of file", path=self.path)
        if not (0 <= symtab.offset and symtab.offset + symtab.size <= self.file_size):
            raise KvmError("kernel: symbol table beyond end of file", path=self.path)
        strs = self._mm[strtab.offset:strtab.offset + strtab.size]
        e = "<" if self.ident.byteorder == "little" else ">"
        if self.ident.elfclass == 64:
            fmt, entsize = e + "IBBHQQ", 24
        else:
            fmt, entsize = e + "IIIBBH", 16
        n = symtab.size // entsize
        data = self._mm[symtab.offset:symtab.offset + n * entsize]
        kinds = [_nlist_type(s) for s in secs]
        exec_secs = {i for i, s in enumerate(secs) if s.flags & SHF_EXECINSTR}
        find = strs.find
        for ent in struct.iter_unpack(fmt, data):
            if self.ident.elfclass == 64:
                name_off, info, _other, shndx, value, symsize = ent
            else:
                name_off, value, symsize, info, _other, shndx = ent
            if name_off == 0 or name_off >= len(strs):
                continue
            end = find(b"\0", name_off)
            if end < 0:
                end = len(strs)
            name = strs[name_off:end].decode("latin-1")
            stype = info & 0xF
            if value and (stype == STT_FUNC or (stype == STT_NOTYPE and shndx in exec_secs)):
                code.append((value, symsize, name))
            if name in index:
                continue            # first match wins, as in libc's nlist
            if shndx in (SHN_UNDEF, SHN_COMMON):
                t = N_UNDF
            elif shndx == SHN_ABS:
                t = N_FN if (info & 0xF) == STT_FILE else N_ABS
            elif shndx < len(kinds):
                t = kinds[shndx]
            else:
                t = N_UNDF
            if (info >> 4) in (STB_GLOBAL, STB_WEAK):
                t |= N_EXT
            index[name] = (value, t, symsize)
        code.sort()
        self._code = ([c[0] for c in code], code)
        return index

    def _symbols(self) -> Dict[str, Tuple[int, int, int]]:
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index = self._build_index()
        return self._index

    def lookup(self, name: str) -> Optional[int]:
        """Address of a symbol by exact name, or None."""
        hit = self._symbols().get(name)
        return None if hit is None else hit[0]

    def size(self, name: str) -> Optional[int]:
        """``st_size`` of a symbol (None if unknown or zero)."""
        hit = self._symbols().get(name)
        return (hit[2] or None) if hit else None

    def function_at(self, pc: int) -> Optional[Tuple[str, int]]:
        """(name, start) of the code symbol containing ``pc``: the nearest
        below, bounded by its size when it has one."""
        self._symbols()
        starts, code = self._code
        i = bisect.bisect_right(starts, pc) - 1
        if i < 0:
            return None
        start, size, name = code[i]
        if size and pc >= start + size:
            return None
        return name, start

    def nlist(self, name: str) -> Optional[Tuple[int, int]]:
        """(value, n_type) with libc nlist's leading-underscore rule, or None."""
        syms = self._symbols()
        hit = syms.get(name)
        if hit is None and name.startswith("_"):
            hit = syms.get(name[1:])
        return None if hit is None else hit[:2]

    def symbols(self) -> Iterator[Tuple[str, int]]:
        """Every (name, address) pair of the symbol table."""
        for name, (value, _t, _s) in self._symbols().items():
            yield name, value

    def symbol_file_bytes(self, name: str, maxlen: int) -> Optional[bytes]:
        """Initial bytes of a data symbol as stored in the FILE (not the dump)."""
        hit = self._symbols().get(name)
        if hit is None:
            return None
        return self.file_bytes_at(hit[0], min(hit[2] or maxlen, maxlen))

    def file_bytes_at(self, vaddr: int, size: int) -> Optional[bytes]:
        """Bytes the kernel FILE holds for a virtual address (PROGBITS only)."""
        for s in self.sections:
            if s.type == SHT_PROGBITS and s.addr and s.addr <= vaddr < s.addr + s.size:
                size = min(size, s.addr + s.size - vaddr)
                off = s.offset + vaddr - s.addr
                if 0 <= off and off + size <= self.file_size:
                    return self._mm[off:off + size]
        return None


def _sh_type(v) -> int:
    names = {"SHT_PROGBITS": SHT_PROGBITS, "SHT_SYMTAB": SHT_SYMTAB, "SHT_NOBITS": SHT_NOBITS}
    return v if isinstance(v, int) else names.get(v, -1)


def _nlist_type(s: Section) -> int:
    if s.type == SHT_PROGBITS:
        return N_DATA if s.flags & SHF_WRITE else N_TEXT
    if s.type == SHT_NOBITS:
        return N_BSS
    return N_UNDF


class _MmapStream:
    """A minimal seekable file over an mmap, for pyelftools."""

    def __init__(self, mm: mmap.mmap) -> None:
        self._mm = mm
        self._pos = 0

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self._pos
        elif whence == 2:
            pos += len(self._mm)
        self._pos = max(0, pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = len(self._mm) if n is None or n < 0 else min(len(self._mm), self._pos + n)
        data = self._mm[self._pos:end]
        self._pos = end
        return data
