"""Defensive reads through a Kvm: None instead of exceptions, plus warnings.

Everything in ``kstate`` reads untrusted kernel memory; these helpers turn a
failed read (``KvmError``: the address is not in the dump) into ``None`` so
walks stop cleanly with a partial result.  Nothing else is caught: a bug, a
missing module or a resolver's own failure propagates.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Tuple

from ..errors import KvmError

#: What a read of a corrupted or incomplete dump raises.
READ_ERRORS = (KvmError,)


def warn(kvm: Any, message: str) -> None:
    """Append ``message`` to ``kvm.warnings`` once (duplicates are dropped)."""
    warnings = getattr(kvm, "warnings", None)
    if isinstance(warnings, list) and message not in warnings:
        warnings.append(message)


def lookup(kvm: Any, name: str) -> Optional[int]:
    """Symbol address or None when the kernel does not have it."""
    return kvm.lookup(name)


def read(kvm: Any, addr: int, size: int) -> Optional[bytes]:
    """``size`` bytes at ``addr`` or None if any byte is unreadable."""
    if addr is None or addr < 0 or size < 0:
        return None
    try:
        data = kvm.read(addr, size)
    except READ_ERRORS:
        return None
    return data if len(data) == size else None


def read_partial(kvm: Any, addr: int, size: int) -> bytes:
    """The readable prefix of ``[addr, addr + size)`` (possibly empty)."""
    if addr is None or addr < 0 or size <= 0:
        return b""
    try:
        return kvm.read_partial(addr, size)
    except READ_ERRORS:
        return b""


def read_int(kvm: Any, addr: Optional[int], size: int, signed: bool = False) -> Optional[int]:
    """An integer in kernel byte order, or None."""
    if addr is None:
        return None
    data = read(kvm, addr, size)
    if data is None:
        return None
    return int.from_bytes(data, kvm.byteorder, signed=signed)


def read_ptr(kvm: Any, addr: Optional[int]) -> Optional[int]:
    """A kernel pointer, or None."""
    return read_int(kvm, addr, kvm.ptrsize)


def read_cstring(kvm: Any, addr: Optional[int], maxlen: int) -> Optional[bytes]:
    """A NUL-terminated string of at most ``maxlen`` bytes (prefix if cut)."""
    if not addr:
        return None
    data = read_partial(kvm, addr, maxlen)
    if not data:
        return None
    return data.split(b"\0", 1)[0]


def decode_text(raw: Optional[bytes]) -> str:
    """Kernel char array to str (UTF-8, undecodable bytes escaped)."""
    if not raw:
        return ""
    return raw.decode("utf-8", errors="backslashreplace")


class Record:
    """Several fields of one kernel structure, read with a single span read.

    ``fields`` maps a key to ``(offset, size)``; a field whose bytes are not
    all readable comes back as None.  One read of the covering span keeps a
    2,000-thread listing fast; fields beyond a short read are retried alone.
    """

    __slots__ = ("_data", "_base", "_lo", "_kvm")

    def __init__(self, kvm: Any, base: int, fields: Iterable[Tuple[int, int]]) -> None:
        spans = [(o, s) for o, s in fields if o is not None]
        self._kvm = kvm
        self._base = base
        if not spans:
            self._lo, self._data = 0, b""
            return
        self._lo = min(o for o, _ in spans)
        hi = max(o + s for o, s in spans)
        self._data = read_partial(kvm, base + self._lo, hi - self._lo)

    def bytes(self, off: Optional[int], size: int) -> Optional[bytes]:
        if off is None:
            return None
        start = off - self._lo
        if 0 <= start and start + size <= len(self._data):
            return self._data[start:start + size]
        return read(self._kvm, self._base + off, size)

    def int(self, off: Optional[int], size: int, signed: bool = False) -> Optional[int]:
        raw = self.bytes(off, size)
        return None if raw is None else int.from_bytes(raw, self._kvm.byteorder, signed=signed)

    def ptr(self, off: Optional[int]) -> Optional[int]:
        return self.int(off, self._kvm.ptrsize)


def int_map(raw: bytes, order: str, layout: Iterable[Tuple[str, int]], width: int
            ) -> Dict[str, int]:
    """Decode ``name -> offset`` register slots of ``width`` bytes from ``raw``.

    Slots that lie (even partly) beyond ``raw`` are left out, never zero.
    """
    out: Dict[str, int] = {}
    for name, off in layout:
        if off + width <= len(raw):
            out[name] = int.from_bytes(raw[off:off + width], order)
    return out
