"""Structure offsets exported by the kernel (``proc_off_*``, ``thread_off_*``,
``kld_off_*``, ``pcb_size``).

Their VALUES live in kernel memory, so they are read through the dump (4-byte
signed ints).  A value outside a sane range is treated as missing, with a
warning, so a garbage symbol cannot send a walk astray.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional

from .memory import lookup, read_int, warn

#: No FreeBSD struct proc / thread / linker_file is anywhere near this big.
MAX_STRUCT_OFFSET = 1 << 16

PROC_FIELDS = ("p_pid", "p_comm", "p_list", "p_threads", "p_hash")
THREAD_FIELDS = ("td_tid", "td_name", "td_oncpu", "td_pcb", "td_plist")
KLD_FIELDS = ("address", "filename", "pathname", "next")
#: Fields read as pointers must be pointer aligned.
_POINTER_FIELDS = {"p_list", "p_threads", "p_hash", "td_pcb", "td_plist",
                   "address", "filename", "pathname", "next"}


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
    bad = not 0 <= value < MAX_STRUCT_OFFSET
    if field in _POINTER_FIELDS and value % kvm.ptrsize:
        bad = True
    if bad:
        warn(kvm, f"ignoring implausible {symbol} = {value}")
        return None
    return value


def read_offsets(kvm: Any, prefix: str, fields: Iterable[str]) -> Dict[str, Optional[int]]:
    """``{field: offset or None}`` for ``<prefix><field>`` symbols."""
    return {f: read_offset(kvm, prefix + f, f) for f in fields}


def proc_offsets(kvm: Any) -> Dict[str, Optional[int]]:
    return read_offsets(kvm, "proc_off_", PROC_FIELDS)


def thread_offsets(kvm: Any) -> Dict[str, Optional[int]]:
    return read_offsets(kvm, "thread_off_", THREAD_FIELDS)


def kld_offsets(kvm: Any) -> Dict[str, Optional[int]]:
    return read_offsets(kvm, "kld_off_", KLD_FIELDS)


def pcb_size(kvm: Any) -> Optional[int]:
    """``sizeof(struct pcb)`` from the ``pcb_size`` symbol, or None."""
    addr = lookup(kvm, "pcb_size")
    if addr is None:
        return None
    value = read_int(kvm, addr, 4, signed=True)
    if value is None or not 0 < value < MAX_STRUCT_OFFSET:
        warn(kvm, f"ignoring unreadable or implausible pcb_size ({value})")
        return None
    return value
