"""The kernel message buffer (sys/sys/msgbuf.h, kern/subr_msgbuf.c) through
``msgbufp``: a ring of ``msg_size`` bytes written at ``msg_wseq``, read by syslogd
up to ``msg_rseq`` (both modulo ``msg_seqmod``)."""

from __future__ import annotations

from typing import Any, Tuple

MSG_MAGIC = 0x063062
MAX_SIZE = 64 << 20


def msgbuf_peekbytes(prog: Any) -> Tuple[bytes, bytes]:
    """(whole buffer oldest first, the part syslogd had not read), NULs removed, as
    ``msgbuf_peekbytes`` would copy them out; ValueError on a damaged header."""
    mbp = prog["msgbufp"]
    if mbp.msg_magic.value_() != MSG_MAGIC:
        raise ValueError(f"msgbuf at {mbp.value_():#x}: bad magic "
                         f"{mbp.msg_magic.value_():#x}")
    size = mbp.msg_size.value_()
    if not 0 < size <= MAX_SIZE:
        raise ValueError(f"msgbuf: implausible msg_size {size}")
    data = prog.read(mbp.msg_ptr.value_(), size)
    w, r = mbp.msg_wseq.value_() % size, mbp.msg_rseq.value_() % size
    text = (data[w:] + data[:w]).replace(b"\0", b"")
    unread = b"" if r == w else (data[r:w] if r < w else data[r:] + data[:w])
    return text, unread.replace(b"\0", b"")
