"""Loaded kernel modules from ``linker_files``, how kgdb finds their files and
where it loads their sections (threads.md §8), and their symbols.

:func:`module_files` is the one call a debugger adapter needs: each module
with its symbol file (searched as kgdb does, under a sysroot and its
``/usr/lib/debug`` mirror) and its section addresses.  :class:`ModuleSymbols`
resolves a name defined in a module file to its address in the dump, with
the same layout, so the library and the debuggers agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import KvmError
from .ksyms import kernel_path
from .memory import decode_text, lookup, read_cstring, read_ptr, warn
from .offsets import kld_offsets
from .walk import follow

MAX_KLDS = 4096
MAX_PATH = 1024
SUFFIXES = (".debug", ".symbols", "")
SHF_ALLOC = 0x2


@dataclass
class Kld:
    """One loaded module.  ``size`` is None: no offset symbol describes it."""

    name: str
    path: Optional[str]
    address: int
    addr: int                      # the struct linker_file
    size: Optional[int] = None


def klds(kvm: Any) -> List[Kld]:
    """Modules in load order, the kernel itself skipped; bad data never raises."""
    offs = kld_offsets(kvm)
    head_sym = lookup(kvm, "linker_files")
    if head_sym is None:
        return []
    if offs["next"] is None or offs["filename"] is None or offs["address"] is None:
        warn(kvm, "klds: kld_off_* symbols missing; modules not listed")
        return []
    kernel_file = read_ptr(kvm, lookup(kvm, "linker_kernel_file"))
    out = []
    for lf in follow(kvm, read_ptr(kvm, head_sym), offs["next"], "linker_files", MAX_KLDS):
        if kernel_file and lf == kernel_file:
            continue
        name = decode_text(read_cstring(kvm, read_ptr(kvm, lf + offs["filename"]), MAX_PATH))
        path = None
        if offs["pathname"] is not None:
            raw = read_cstring(kvm, read_ptr(kvm, lf + offs["pathname"]), MAX_PATH)
            path = decode_text(raw) if raw else None
        address = read_ptr(kvm, lf + offs["address"])
        if not address:
            warn(kvm, f"klds: {name or hex(lf)} has no base address; skipped")
            continue
        out.append(Kld(name, path, address, lf))
    return out


def linker_path(kvm: Any) -> List[str]:
    """``kern.module_path`` directories from the dump (``linker_path``)."""
    raw = read_cstring(kvm, lookup(kvm, "linker_path"), MAX_PATH)
    return [d for d in decode_text(raw).split(";") if d] if raw else []


def _rooted(sysroot: Optional[str], path: str) -> str:
    if not sysroot or sysroot == "/":
        return path
    return os.path.join(sysroot, path.lstrip("/"))


def search_places(kernel: Optional[str] = None, module_dirs: Sequence[str] = (),
                  sysroot: Optional[str] = None) -> List[Tuple[str, str]]:
    """Where a module's file is looked for, in order, each with what it is:
    the kernel's directory, then each ``linker_path`` directory of the
    crashed machine under the sysroot's ``/usr/lib/debug`` mirror, then under
    the sysroot itself."""
    under = " under the sysroot" if sysroot and sysroot != "/" else ""
    places = [(os.path.dirname(os.path.abspath(kernel)), "the kernel's directory")] \
        if kernel else []
    for d in module_dirs:
        places += [(_rooted(sysroot, os.path.join("/usr/lib/debug", d.lstrip("/"))),
                    f"the /usr/lib/debug mirror of module path {d}{under}"),
                   (_rooted(sysroot, d), f"module path {d}{under}")]
    seen: Dict[str, str] = {}
    for d, label in places:
        seen.setdefault(d, label)
    return list(seen.items())


def search_dirs(kernel: Optional[str] = None, module_dirs: Sequence[str] = (),
                sysroot: Optional[str] = None) -> List[str]:
    """The directories of :func:`search_places`, in order."""
    return [d for d, _label in search_places(kernel, module_dirs, sysroot)]


def locate_kld_file(filename: str, kernel: Optional[str] = None,
                    module_dirs: Sequence[str] = (), pathname: Optional[str] = None,
                    sysroot: Optional[str] = None) -> Optional[Tuple[str, str]]:
    """kgdb's search over :func:`search_places`: in each directory ``.debug``,
    ``.symbols``, then the bare name; then ``pathname`` (under the sysroot) if
    that file exists.  (file, where it was found), or None."""
    base = os.path.basename(filename)
    for d, label in search_places(kernel, module_dirs, sysroot):
        for suffix in SUFFIXES:
            cand = os.path.join(d, base + suffix)
            if os.path.isfile(cand):
                return cand, label
    if pathname:
        cand = _rooted(sysroot, pathname)
        if os.path.isfile(cand):
            return cand, "the module's path recorded in the dump" + (
                " under the sysroot" if sysroot and sysroot != "/" else "")
    return None


def find_kld_file(filename: str, kernel: Optional[str] = None,
                  module_dirs: Sequence[str] = (), pathname: Optional[str] = None,
                  sysroot: Optional[str] = None) -> Optional[str]:
    """The file :func:`locate_kld_file` finds, or None."""
    hit = locate_kld_file(filename, kernel, module_dirs, pathname, sysroot)
    return hit[0] if hit else None


def _sysroot(kvm: Any) -> Optional[str]:
    return (getattr(kvm, "open_options", None) or {}).get("sysroot")


def kld_file(kvm: Any, kld: Kld) -> Optional[str]:
    """The symbol file for a module of this dump, located like kgdb does
    (under the sysroot the dump was opened with)."""
    return find_kld_file(kld.name, kernel_path(kvm), linker_path(kvm), kld.path, _sysroot(kvm))


def _align_up(addr: int, align: int) -> int:
    """BFD's ``align_power``: alignment rounded up to a power of two."""
    a = 1 << (align - 1).bit_length() if align > 1 else 1
    return (addr + a - 1) & -a


def _layout(path: str, base: int):
    """(relocatable?, [(section index, name, load address)]) as kgdb places
    the allocated sections of module file PATH loaded at BASE."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as f:
            try:
                elf = ELFFile(f)
                rel = elf.header["e_type"] not in ("ET_EXEC", "ET_DYN")
                secs = [(i, s.name, s.header["sh_addr"], s.header["sh_size"],
                         s.header["sh_addralign"]) for i, s in enumerate(elf.iter_sections())
                        if s.header["sh_flags"] & SHF_ALLOC]
            except (ELFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
                    AssertionError, UnicodeDecodeError, OverflowError):
                raise KvmError(f'"{path}": not an object file') from None
    except OSError as e:
        if isinstance(e, KvmError):
            raise
        raise KvmError(f'"{path}": can\'t open: {e.strerror or e}') from None
    if ".text" not in (name for _i, name, *_ in secs):
        raise KvmError(f'"{path}": can\'t find text section')
    out = []
    cur = base
    for i, name, addr, size, align in secs:
        if rel:
            cur = _align_up(cur, align)
            addr, cur = cur, cur + size
        else:
            addr += base
        out.append((i, name, addr))
    return rel, out


def section_addresses(path: str, base: int) -> Dict[str, int]:
    """``{section: load address}`` of module file PATH loaded at BASE, as kgdb's
    ``load_kld`` computes them (threads.md §8.3): every allocated section
    (SHF_ALLOC, empty ones included, as current gdb) in section-table
    order; ``ET_EXEC``/``ET_DYN``: its address + BASE; else (``ET_REL``): placed
    after the previous one from BASE, aligned to its ``sh_addralign``.
    A name seen twice keeps its first address.  KvmError with kgdb's
    messages if the file is unusable."""
    out: Dict[str, int] = {}
    for _i, name, addr in _layout(path, base)[1]:
        out.setdefault(name, addr)
    return out


def kld_sections(kvm: Any, kld: Kld) -> Tuple[str, Dict[str, int]]:
    """(symbol file, ``{section: load address}``) for a module of this dump,
    as kgdb loads it; KvmError if the file is not found or unusable."""
    path = kld_file(kvm, kld)
    if path is None:
        raise KvmError(f"{kld.name}: Unable to locate kld")
    return path, section_addresses(path, kld.address)


# -- what the adapters need, and module symbols ---------------------------------------

@dataclass
class ModuleFile:
    """A loaded module and its symbol file: ``file`` (None if not found, then
    ``error`` says why), ``sections`` ({name: load address}, kgdb's layout),
    ``searched`` (the directories looked in, in order), ``where`` (which of
    them held ``file``, e.g. ``module path /boot/modules``: see
    :func:`search_places`)."""

    name: str
    address: int
    pathname: Optional[str]
    file: Optional[str]
    sections: Dict[str, int]
    error: Optional[str] = None
    searched: Tuple[str, ...] = ()
    where: Optional[str] = None


def module_files(kvm: Any, sysroot: Optional[str] = None) -> List[ModuleFile]:
    """Every loaded module (the kernel skipped) with its symbol file and
    section addresses; never raises.  ``sysroot`` defaults to the one the
    dump was opened with."""
    root = sysroot if sysroot is not None else _sysroot(kvm)
    kpath = kernel_path(kvm)
    mdirs = linker_path(kvm)
    dirs = tuple(search_dirs(kpath, mdirs, root))
    out = []
    for k in klds(kvm):
        hit = locate_kld_file(k.name, kpath, mdirs, k.path, root)
        if hit is None:
            out.append(ModuleFile(k.name, k.address, k.path, None, {},
                                  f"{k.name}: Unable to locate kld", dirs))
            continue
        path, where = hit
        try:
            secs = section_addresses(path, k.address)
        except KvmError as e:
            out.append(ModuleFile(k.name, k.address, k.path, path, {}, str(e), dirs, where))
            continue
        out.append(ModuleFile(k.name, k.address, k.path, path, secs, None, dirs, where))
    return out


class ModuleSymbols:
    """Symbols defined in one module file, at their addresses in the dump.

    ``ET_REL`` (amd64 modules): a symbol's value is an offset in its section,
    placed as kgdb places the section; ``ET_DYN``/``ET_EXEC``: value + base.
    Built on first use from the file's first ``SHT_SYMTAB``."""

    def __init__(self, path: str, base: int) -> None:
        self.path = path
        self.base = base
        self._index: Optional[Dict[str, int]] = None

    def lookup(self, name: str) -> Optional[int]:
        if self._index is None:
            self._index = self._build()
        return self._index.get(name)

    def _build(self) -> Dict[str, int]:
        import struct

        from ..elfkernel import SHN_ABS, SHN_COMMON, SHN_UNDEF, SHT_SYMTAB, KernelImage
        rel, placed = _layout(self.path, self.base)
        where = {i: addr for i, _n, addr in placed}
        img = KernelImage(self.path)
        try:
            secs = img.sections
            symtab = next((s for s in secs if s.type == SHT_SYMTAB), None)
            if symtab is None or not 0 <= symtab.link < len(secs):
                return {}
            strtab = secs[symtab.link]
            mm, size = img._mm, img.file_size
            if strtab.offset + strtab.size > size or symtab.offset + symtab.size > size:
                raise KvmError("symbol table beyond end of file", path=self.path)
            strs = mm[strtab.offset:strtab.offset + strtab.size]
            e = "<" if img.ident.byteorder == "little" else ">"
            wide = img.ident.elfclass == 64
            fmt, entsize = (e + "IBBHQQ", 24) if wide else (e + "IIIBBH", 16)
            n = symtab.size // entsize
            out: Dict[str, int] = {}
            for ent in struct.iter_unpack(fmt, mm[symtab.offset:symtab.offset + n * entsize]):
                if wide:
                    name_off, info, _o, shndx, value, _sz = ent
                else:
                    name_off, value, _sz, info, _o, shndx = ent
                if not name_off or name_off >= len(strs) or shndx in (SHN_UNDEF, SHN_COMMON):
                    continue
                if info & 0xF in (3, 4):                 # STT_SECTION, STT_FILE
                    continue
                end = strs.find(b"\0", name_off)
                name = strs[name_off:end if end >= 0 else len(strs)].decode("latin-1")
                if name in out:
                    continue
                if shndx == SHN_ABS:
                    out[name] = value
                elif rel:
                    if shndx in where:
                        out[name] = where[shndx] + value
                else:
                    out[name] = value + self.base
            return out
        finally:
            img.close()


class ModuleTable:
    """Name lookup over every module whose file was found, in load order."""

    def __init__(self, files: List[ModuleFile]) -> None:
        self.files = files
        self.symbols = [ModuleSymbols(m.file, m.address) for m in files
                        if m.file is not None and m.error is None]

    def lookup(self, name: str) -> Optional[int]:
        for ms in self.symbols:
            try:
                hit = ms.lookup(name)
            except KvmError:
                ms._index = {}           # unusable file: its error is in ModuleFile
                continue
            if hit is not None:
                return hit
        return None
