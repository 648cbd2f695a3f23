"""Loaded kernel modules from ``linker_files``, how kgdb finds their files and
where it loads their sections (threads.md §8)."""

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


def find_kld_file(filename: str, kernel: Optional[str] = None,
                  module_dirs: Sequence[str] = (), pathname: Optional[str] = None
                  ) -> Optional[str]:
    """kgdb's search: the kernel's directory, then each ``linker_path``
    directory; in each ``.debug``, ``.symbols``, then the bare name.  Falls
    back to ``pathname`` if that file exists; None if nothing is found."""
    dirs = ([os.path.dirname(os.path.abspath(kernel))] if kernel else []) + list(module_dirs)
    base = os.path.basename(filename)
    for d in dirs:
        for suffix in SUFFIXES:
            cand = os.path.join(d, base + suffix)
            if os.path.isfile(cand):
                return cand
    if pathname and os.path.isfile(pathname):
        return pathname
    return None


def kld_file(kvm: Any, kld: Kld) -> Optional[str]:
    """The symbol file for a module of this dump, located like kgdb does."""
    return find_kld_file(kld.name, kernel_path(kvm), linker_path(kvm), kld.path)


def _align_up(addr: int, align: int) -> int:
    """BFD's ``align_power``: alignment rounded up to a power of two."""
    a = 1 << (align - 1).bit_length() if align > 1 else 1
    return (addr + a - 1) & -a


def section_addresses(path: str, base: int) -> Dict[str, int]:
    """``{section: load address}`` of module file PATH loaded at BASE, as kgdb's
    ``load_kld`` computes them (threads.md §8.3): every allocated section
    (SHF_ALLOC, empty ones included, as current gdb) in section-table
    order; ``ET_EXEC``/``ET_DYN``: its address + BASE; else (``ET_REL``): placed
    after the previous one from BASE, aligned to its ``sh_addralign``.
    A name seen twice keeps its first address.  KvmError with kgdb's
    messages if the file is unusable."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as f:
            try:
                elf = ELFFile(f)
                rel = elf.header["e_type"] not in ("ET_EXEC", "ET_DYN")
                secs = [(s.name, s.header["sh_addr"], s.header["sh_size"],
                         s.header["sh_addralign"]) for s in elf.iter_sections()
                        if s.header["sh_flags"] & SHF_ALLOC]
            except (ELFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
                    AssertionError, UnicodeDecodeError, OverflowError):
                raise KvmError(f'"{path}": not an object file') from None
    except OSError as e:
        if isinstance(e, KvmError):
            raise
        raise KvmError(f'"{path}": can\'t open: {e.strerror or e}') from None
    if ".text" not in (name for name, *_ in secs):
        raise KvmError(f'"{path}": can\'t find text section')
    out: Dict[str, int] = {}
    cur = base
    for name, addr, size, align in secs:
        if rel:
            cur = _align_up(cur, align)
            addr, cur = cur, cur + size
        else:
            addr += base
        out.setdefault(name, addr)
    return out


def kld_sections(kvm: Any, kld: Kld) -> Tuple[str, Dict[str, int]]:
    """(symbol file, ``{section: load address}``) for a module of this dump,
    as kgdb loads it; KvmError if the file is not found or unusable."""
    path = kld_file(kvm, kld)
    if path is None:
        raise KvmError(f"{kld.name}: Unable to locate kld")
    return path, section_addresses(path, kld.address)
