"""queue(3) iterators (sys/sys/queue.h): LIST, TAILQ, STAILQ and SLIST.

``head`` is the list head (a structure or a pointer to one) and ``field`` the name
of the entry member in the element type, exactly as in the C macros; the elements
come out as ``struct type *`` Objects.  A loop in a corrupted dump raises
ValueError instead of walking forever.
"""

from __future__ import annotations

from typing import Any, Iterator

from ._common import walk


def LIST_FOREACH(head: Any, field: str) -> Iterator[Any]:
    """``LIST_FOREACH(var, head, field)``: ``lh_first``, then ``field.le_next``."""
    return walk(head.lh_first, lambda e: e.member_(field).le_next, "LIST_FOREACH")


def TAILQ_FOREACH(head: Any, field: str) -> Iterator[Any]:
    """``TAILQ_FOREACH(var, head, field)``: ``tqh_first``, then ``field.tqe_next``."""
    return walk(head.tqh_first, lambda e: e.member_(field).tqe_next, "TAILQ_FOREACH")


def STAILQ_FOREACH(head: Any, field: str) -> Iterator[Any]:
    """``STAILQ_FOREACH(var, head, field)``: ``stqh_first``, then ``field.stqe_next``."""
    return walk(head.stqh_first, lambda e: e.member_(field).stqe_next, "STAILQ_FOREACH")


def SLIST_FOREACH(head: Any, field: str) -> Iterator[Any]:
    """``SLIST_FOREACH(var, head, field)``: ``slh_first``, then ``field.sle_next``."""
    return walk(head.slh_first, lambda e: e.member_(field).sle_next, "SLIST_FOREACH")
