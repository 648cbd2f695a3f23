"""tree(3) red-black (rank-balanced) trees, sys/sys/tree.h.

Three element layouts exist and are told apart by the entry's member names:
FreeBSD 15 ``rbe_link[3]`` (parent, left, right; the parent word carries two
rank-difference bits), FreeBSD 13-14 ``rbe_left``/``rbe_right``/``rbe_parent``
(bits in ``rbe_parent``), and older kernels' ``rbe_color`` member (no bits).
Child pointers never carry bits; ``RB_PARENT`` strips them.
"""

from __future__ import annotations

from typing import Any, Iterator, List, Set

from ._common import MAX_LENGTH

_RB_LR = 3


def _entry(elm: Any, field: str) -> Any:
    return elm.member_(field)


def _has(obj: Any, name: str) -> bool:
    return any(m.name == name for m in obj.type_.members)


def RB_LEFT(elm: Any, field: str) -> Any:
    """``RB_LEFT(elm, field)``: the left child."""
    e = _entry(elm, field)
    return e.rbe_link[1] if _has(e, "rbe_link") else e.rbe_left


def RB_RIGHT(elm: Any, field: str) -> Any:
    """``RB_RIGHT(elm, field)``: the right child."""
    e = _entry(elm, field)
    return e.rbe_link[2] if _has(e, "rbe_link") else e.rbe_right


def RB_PARENT(elm: Any, field: str) -> Any:
    """``RB_PARENT(elm, field)``: the parent, rank-difference bits removed."""
    import drgn
    e = _entry(elm, field)
    if _has(e, "rbe_link"):
        up = e.rbe_link[0]
    elif _has(e, "rbe_color"):
        return e.rbe_parent
    else:
        up = e.rbe_parent
    return drgn.Object(elm.prog_, up.type_, value=up.value_() & ~_RB_LR)


def RB_ROOT(head: Any) -> Any:
    """``RB_ROOT(head)``."""
    return head.rbh_root


def RB_MIN(head: Any, field: str) -> Any:
    """``RB_MIN(name, head)``: the leftmost element (NULL if the tree is empty)."""
    elm = head.rbh_root
    for _ in range(MAX_LENGTH):
        if not elm.value_() or not RB_LEFT(elm, field).value_():
            return elm
        elm = RB_LEFT(elm, field)
    raise ValueError("RB_MIN: tree deeper than any real one")


def RB_NEXT(elm: Any, field: str) -> Any:
    """``RB_NEXT(name, head, elm)``: the in-order successor (NULL after the last)."""
    right = RB_RIGHT(elm, field)
    if right.value_():
        elm = right
        while RB_LEFT(elm, field).value_():
            elm = RB_LEFT(elm, field)
        return elm
    for _ in range(MAX_LENGTH):
        parent = RB_PARENT(elm, field)
        if not parent.value_() or RB_LEFT(parent, field).value_() == elm.value_():
            return parent
        elm = parent
    raise ValueError("RB_NEXT: parent chain loops")


def RB_FOREACH(head: Any, field: str) -> Iterator[Any]:
    """``RB_FOREACH(x, name, head)``: every element in order (by child pointers
    only, so a damaged parent word does not derail it).  ValueError on a cycle."""
    stack: List[Any] = []
    seen: Set[int] = set()
    elm = head.rbh_root
    while stack or elm.value_():
        while elm.value_():
            if elm.value_() in seen:
                raise ValueError(f"RB_FOREACH: cycle at {elm.value_():#x}")
            seen.add(elm.value_())
            stack.append(elm)
            elm = RB_LEFT(elm, field)
        elm = stack.pop()
        yield elm
        elm = RB_RIGHT(elm, field)
