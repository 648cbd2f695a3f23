"""Structure offsets exported by the kernel (``proc_off_*``, ``thread_off_*``,
``kld_off_*``, ``pcb_size``).

Their VALUES live in kernel memory, so they are read through the dump (4-byte
signed ints).  A value outside a sane range is treated as missing, with a
warning, so a garbage symbol cannot send a walk astray.  A missing offset is
then taken from the kernel's DWARF when it has debug info (kernels before
10.3, or stripped of these variables; threads.md §1) - DWARF is only opened
when a symbol is missing.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Tuple

from . import dwarf
from .memory import lookup, read_int, warn

#: No FreeBSD struct proc / thread / linker_file is anywhere near this big.
MAX_STRUCT_OFFSET = 1 << 16

PROC_FIELDS = ("p_pid", "p_comm", "p_list", "p_threads", "p_hash")
THREAD_FIELDS = ("td_tid", "td_name", "td_oncpu", "td_pcb", "td_plist")
KLD_FIELDS = ("address", "filename", "pathname", "next")
#: Fields read as pointers must be pointer aligned.
_POINTER_FIELDS = {"p_list", "p_threads", "p_hash", "td_pcb", "td_plist",
                   "address", "filename", "pathname", "next", "p_pptr"}
#: symbol prefix -> (DWARF structure, member paths that differ from the field name).
DWARF_STRUCTS: Dict[str, Tuple[str, Dict[str, str]]] = {
    "proc_off_": ("proc", {}),
    "thread_off_": ("thread", {}),
    "kld_off_": ("linker_file", {"next": "link.tqe_next"}),
}


def plausible(kvm: Any, field: str, value: int) -> bool:
    """An offset inside any plausible structure, pointer aligned if it must be."""
    if not 0 <= value < MAX_STRUCT_OFFSET:
        return False
    return not (field in _POINTER_FIELDS and value % kvm.ptrsize)


def read_offset(kvm: Any, symbol: str, field: str) -> Optional[int]:
    """One offset symbol's value, validated; None (with a warning if it was
    present but implausible) otherwise."""
    addr = lookup(kvm, symbol)
    if addr is None:
        return None
    value = read_int(kvm, addr, 4, signed=True)
    if value is None:
        warn(kvm, f"cannot read offset symbol {symbol}")
        return None
    if not plausible(kvm, field, value):
        warn(kvm, f"ignoring implausible {symbol} = {value}")
        return None
    return value


def read_offsets(kvm: Any, prefix: str, fields: Iterable[str]) -> Dict[str, Optional[int]]:
    """``{field: offset or None}`` for ``<prefix><field>`` symbols, the
    missing ones from DWARF when the kernel has it."""
    out = {f: read_offset(kvm, prefix + f, f) for f in fields}
    missing = [f for f, v in out.items() if v is None]
    if missing and prefix in DWARF_STRUCTS:
        struct, paths = DWARF_STRUCTS[prefix]
        out.update(dwarf_offsets(kvm, struct, missing, paths))
    return out


def dwarf_offsets(kvm: Any, struct: str, fields: Iterable[str],
                  paths: Optional[Dict[str, str]] = None) -> Dict[str, Optional[int]]:
    """``{field: offset or None}`` of members of ``struct <struct>`` from DWARF
    (``paths`` maps a field to a dotted member path when they differ)."""
    fields = list(fields)
    layout = dwarf.struct_layout(kvm, struct)
    out: Dict[str, Optional[int]] = dict.fromkeys(fields)
    if layout is None:
        return out
    for f in fields:
        value = layout.offset((paths or {}).get(f, f))
        if value is not None and plausible(kvm, f, value):
            out[f] = value
    return out


def proc_offsets(kvm: Any) -> Dict[str, Optional[int]]:
    return read_offsets(kvm, "proc_off_", PROC_FIELDS)


def thread_offsets(kvm: Any) -> Dict[str, Optional[int]]:
    return read_offsets(kvm, "thread_off_", THREAD_FIELDS)


def kld_offsets(kvm: Any) -> Dict[str, Optional[int]]:
    return read_offsets(kvm, "kld_off_", KLD_FIELDS)


def pcb_size(kvm: Any) -> Optional[int]:
    """``sizeof(struct pcb)`` from the ``pcb_size`` symbol, else from DWARF
    (as kgdb), or None."""
    addr = lookup(kvm, "pcb_size")
    if addr is not None:
        value = read_int(kvm, addr, 4, signed=True)
        if value is not None and 0 < value < MAX_STRUCT_OFFSET:
            return value
        warn(kvm, f"ignoring unreadable or implausible pcb_size ({value})")
    layout = dwarf.struct_layout(kvm, "pcb")
    size = layout.size if layout is not None else None
    return size if size is not None and 0 < size < MAX_STRUCT_OFFSET else None
