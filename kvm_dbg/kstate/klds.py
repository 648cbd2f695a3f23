"""Loaded kernel modules from ``linker_files`` and how kgdb finds their files
(threads.md §8)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from .ksyms import kernel_path
from .memory import decode_text, lookup, read_cstring, read_ptr, warn
from .offsets import kld_offsets
from .walk import follow

MAX_KLDS = 4096
MAX_PATH = 1024
SUFFIXES = (".debug", ".symbols", "")


@dataclass
class Kld:
    """One loaded module.  ``size`` is None: no offset symbol describes it."""

    name: str
    path: Optional[str]
    address: int
    addr: int                      # the struct linker_file
    size: Optional[int] = None


def klds(kvm: Any) -> List[Kld]:
    """Modules in load order, the kernel itself skipped; never raises."""
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
