"""Interrupt counters (kern/kern_intr.c, x86/x86/intr_machdep.c, kern/subr_intr.c):
``intrnames`` holds NUL-terminated names back to back (``sintrnames`` bytes),
``intrcnt`` one ``u_long`` per name (``sintrcnt`` bytes).  Kernels that size them at
boot (those with ``nintrcnt``, FreeBSD 12+) hold pointers, older ones arrays - the
test ``vmstat -M`` makes.  Symbols only: no DWARF needed."""

from __future__ import annotations

from typing import Any, List, Tuple

from ._common import has_symbol, symbol_address

MAX_BYTES = 16 << 20


def _size(prog: Any, name: str) -> int:
    value = prog.read_word(symbol_address(prog, name))
    if value > MAX_BYTES:
        raise ValueError(f"{name} = {value}: implausible")
    return value


def intr_counters(prog: Any) -> List[Tuple[str, int]]:
    """``[(name, count)]`` for every interrupt counter slot, in kernel order (names
    as stored, x86 pads them with spaces; empty slots have empty names)."""
    nbytes, cbytes = _size(prog, "sintrnames"), _size(prog, "sintrcnt")
    names_at, counts_at = symbol_address(prog, "intrnames"), symbol_address(prog, "intrcnt")
    if has_symbol(prog, "nintrcnt"):
        names_at, counts_at = prog.read_word(names_at), prog.read_word(counts_at)
    word = 8 if prog.platform.flags & prog.platform.flags.IS_64_BIT else 4
    order = "little" if prog.platform.flags & prog.platform.flags.IS_LITTLE_ENDIAN else "big"
    names = prog.read(names_at, nbytes) if nbytes else b""
    raw = prog.read(counts_at, cbytes) if cbytes else b""
    counts = [int.from_bytes(raw[i:i + word], order) for i in range(0, len(raw) - word + 1,
                                                                     word)]
    out, pos = [], 0
    for count in counts:
        end = names.find(b"\0", pos)
        if end < 0:
            end = len(names)
        out.append((names[pos:end].decode("utf-8", "replace"), count))
        pos = min(end + 1, len(names))
    return out
