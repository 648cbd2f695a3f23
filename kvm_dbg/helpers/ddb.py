"""ddb(4)'s capture buffer (ddb/db_capture.c): what ``capture on`` recorded,
``db_capture_bufoff`` bytes at ``db_capture_buf`` - typically the kdb.enter.panic
script's output (``show pcpu``, ``bt``, ``ps``...).  Symbols only, as
``ddb capture -M core print`` reads it."""

from __future__ import annotations

from typing import Any

from ._common import has_symbol, symbol_address

MAX_BYTES = 64 << 20


def db_capture_buffer(prog: Any) -> str:
    """The captured text ('' when nothing was captured); LookupError if the kernel
    has no DDB capture support, ValueError if the offsets are implausible."""
    buf = prog.read_word(symbol_address(prog, "db_capture_buf"))
    off = prog.read_u32(symbol_address(prog, "db_capture_bufoff"))
    if has_symbol(prog, "db_capture_bufsize"):
        size = prog.read_u32(symbol_address(prog, "db_capture_bufsize"))
        if off > size:
            raise ValueError(f"db_capture_bufoff {off} > db_capture_bufsize {size}")
    if off > MAX_BYTES or (off and not buf):
        raise ValueError(f"db_capture_buf {buf:#x}, db_capture_bufoff {off}: implausible")
    return prog.read(buf, off).decode("utf-8", "replace") if off else ""
