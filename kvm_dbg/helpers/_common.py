"""What the helper modules share: loop guards and symbol lookups."""

from __future__ import annotations

from typing import Any, Iterator, Set

#: No kernel list is longer; a longer walk means a corrupted dump.
MAX_LENGTH = 1 << 22


def walk(first: Any, next_of: Any, what: str) -> Iterator[Any]:
    """Follow ``first``, ``next_of(elm)``... until NULL; ValueError on a loop or an
    absurd length (a corrupted dump), never an endless walk."""
    seen: Set[int] = set()
    elm = first
    while elm.value_():
        addr = elm.value_()
        if addr in seen:
            raise ValueError(f"{what}: loop at {addr:#x}")
        if len(seen) >= MAX_LENGTH:
            raise ValueError(f"{what}: more than {MAX_LENGTH} elements")
        seen.add(addr)
        yield elm
        elm = next_of(elm)


def symbol_address(prog: Any, name: str) -> int:
    """Address of a kernel symbol; LookupError naming it if the kernel lacks it."""
    try:
        return prog.symbol(name).address
    except LookupError:
        raise LookupError(f"symbol {name} not found in this kernel") from None


def has_symbol(prog: Any, name: str) -> bool:
    try:
        prog.symbol(name)
    except LookupError:
        return False
    return True

