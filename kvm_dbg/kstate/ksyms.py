"""Kernel ELF symbol facts the dump cannot give: sizes and address -> function.

Read once per kernel file with pyelftools and cached.  Used for trap-frame
unwinding (which function is a frame in) and for the size of ``stoppcbs``.
Without a kernel file everything here answers None.
"""

from __future__ import annotations

import bisect
import os
import threading
from typing import Any, Dict, List, Optional, Tuple

_cache: Dict[Tuple[str, float], KernelSymbols] = {}
_lock = threading.Lock()


class KernelSymbols:
    """Sorted function starts plus a name -> (address, size) map."""

    def __init__(self, entries: List[Tuple[int, int, str, bool]]) -> None:
        self.by_name: Dict[str, Tuple[int, int]] = {}
        funcs = []
        for value, size, name, is_code in entries:
            self.by_name.setdefault(name, (value, size))
            if is_code and value:
                funcs.append((value, size, name))
        funcs.sort()
        self._starts = [f[0] for f in funcs]
        self._funcs = funcs

    def size(self, name: str) -> Optional[int]:
        hit = self.by_name.get(name)
        return hit[1] if hit and hit[1] else None

    def function_at(self, pc: int) -> Optional[Tuple[str, int]]:
        """(name, start) of the code symbol containing ``pc`` (nearest below,
        bounded by its size when the symbol has one)."""
        i = bisect.bisect_right(self._starts, pc) - 1
        if i < 0:
            return None
        start, size, name = self._funcs[i]
        if size and pc >= start + size:
            return None
        return name, start


def load(path: str) -> Optional[KernelSymbols]:
    """Symbols of the ELF file at ``path`` (cached), or None if unreadable."""
    try:
        key = (path, os.stat(path).st_mtime)
    except OSError:
        return None
    with _lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    try:
        from elftools.elf.elffile import ELFFile
        from elftools.elf.sections import SymbolTableSection
        entries = []
        with open(path, "rb") as f:
            elf = ELFFile(f)
            code_secs = set()
            for idx, sec in enumerate(elf.iter_sections()):
                if sec["sh_flags"] & 0x4:          # SHF_EXECINSTR
                    code_secs.add(idx)
            for sec in elf.iter_sections():
                if not isinstance(sec, SymbolTableSection):
                    continue
                for sym in sec.iter_symbols():
                    if not sym.name:
                        continue
                    shndx = sym["st_shndx"]
                    stype = sym["st_info"]["type"]
                    is_code = stype == "STT_FUNC" or (
                        isinstance(shndx, int) and shndx in code_secs
                        and stype in ("STT_NOTYPE", "STT_FUNC"))
                    entries.append((sym["st_value"], sym["st_size"], sym.name, is_code))
                break
    except Exception:  # any parse failure just disables the helper
        return None
    syms = KernelSymbols(entries)
    with _lock:
        _cache[key] = syms
    return syms


def kernel_path(kvm: Any) -> Optional[str]:
    """The kernel file a Kvm was opened with, if it says."""
    path = getattr(kvm, "kernel_path", None)
    if not path:
        path = getattr(getattr(kvm, "kernel", None), "path", None)
    return path if isinstance(path, str) else None


def for_kvm(kvm: Any) -> Optional[KernelSymbols]:
    """Kernel symbols for a Kvm (None when the kernel file is unknown)."""
    path = kernel_path(kvm)
    return load(path) if path else None


def file_bytes(path: str, name: str, maxlen: int) -> Optional[bytes]:
    """Initial bytes of a data symbol as stored in the ELF FILE (not the dump)."""
    try:
        from elftools.elf.elffile import ELFFile
        from elftools.elf.sections import SymbolTableSection
        with open(path, "rb") as f:
            elf = ELFFile(f)
            symtab = next((s for s in elf.iter_sections()
                           if isinstance(s, SymbolTableSection)), None)
            if symtab is None:
                return None
            syms = symtab.get_symbol_by_name(name)
            if not syms:
                return None
            sym = syms[0]
            shndx = sym["st_shndx"]
            if not isinstance(shndx, int) or shndx >= elf.num_sections():
                return None
            sec = elf.get_section(shndx)
            if sec["sh_type"] == "SHT_NOBITS":
                return None
            off = sym["st_value"] - sec["sh_addr"]
            size = sym["st_size"] or maxlen
            if off < 0 or off >= sec["sh_size"]:
                return None
            size = min(size, maxlen, sec["sh_size"] - off)
            f.seek(sec["sh_offset"] + off)
            return f.read(size)
    except Exception:  # a broken file means "unknown"
        return None
