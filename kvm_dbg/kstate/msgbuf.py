"""The kernel message buffer (``dmesg``) and its unread portion (threads.md §10).

Read through ``msgbufp``; if that or the struct is unusable, fall back to the
minidump's msgbuf section, whose order is then unknown (no unread part).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, List, Optional

from .memory import Record, lookup, read_partial, read_ptr, warn

MSG_MAGIC = 0x063062
#: Sanity bound for msg_size (the kernel default is 96 KiB; tunable).
MAX_MSGBUF = 64 << 20
#: msg_seqmod = SEQ_FACTOR * msg_size (sys/kern/subr_msgbuf.c SEQMOD()).
SEQ_FACTOR = 16
UNREAD_HEADER = "Unread portion of the kernel message buffer:"
_PRI = re.compile(rb"^<(\d+)>")


@dataclass
class MsgBuf:
    """``text``: the whole buffer, oldest first; ``unread``: what syslogd has
    not consumed (kgdb/LLDB print it on open); ``source``: "msgbufp",
    "section" (minidump copy, unordered) or "none"."""

    text: str
    unread: str
    source: str
    size: int = 0
    wseq: Optional[int] = None
    rseq: Optional[int] = None

    def unread_banner(self) -> str:
        """The block kgdb/LLDB print on open ('' when nothing is unread)."""
        if not self.unread:
            return ""
        body = self.unread if self.unread.endswith("\n") else self.unread + "\n"
        return f"\n{UNREAD_HEADER}\n{body}\n"

    def dmesg(self, all_facilities: bool = False) -> List[str]:
        """dmesg(8)'s lines: syslog ``<pri>`` prefixes stripped, non-kernel
        facilities dropped unless ``all_facilities``."""
        out = []
        for line in self.text.encode("utf-8", "surrogateescape").split(b"\n"):
            m = _PRI.match(line)
            if m:
                if not all_facilities and (int(m.group(1)) & 0x3F8) >> 3 != 0:
                    continue
                line = line[m.end():]
            out.append(line.decode("utf-8", "backslashreplace"))
        if out and out[-1] == "":
            out.pop()
        return out


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _layout(ptrsize: int):
    """(ptr, magic, size, wseq, rseq) offsets of struct msgbuf."""
    return (0,) + tuple(ptrsize + 4 * i for i in range(4))


def msgbuf(kvm: Any) -> MsgBuf:
    """The message buffer; bad data never raises (empty text when nothing is usable)."""
    got = _from_memory(kvm)
    if got is not None:
        return got
    section = getattr(kvm, "msgbuf_section", None)
    if section:
        text = bytes(section).replace(b"\0", b"")
        return MsgBuf(_text(text), "", "section", len(section))
    return MsgBuf("", "", "none")


def _from_memory(kvm: Any) -> Optional[MsgBuf]:
    sym = lookup(kvm, "msgbufp")
    if sym is None:
        return None
    mbp = read_ptr(kvm, sym)
    if not mbp:
        warn(kvm, "msgbuf: msgbufp unreadable or NULL")
        return None
    o_ptr, o_magic, o_size, o_wseq, o_rseq = _layout(kvm.ptrsize)
    rec = Record(kvm, mbp, [(o_ptr, kvm.ptrsize), (o_rseq, 4)])
    magic, size = rec.int(o_magic, 4), rec.int(o_size, 4)
    wseq, rseq, ring = rec.int(o_wseq, 4), rec.int(o_rseq, 4), rec.ptr(o_ptr)
    if magic != MSG_MAGIC:
        warn(kvm, "msgbuf: kernel message buffer has different magic number")
        return None
    if not size or size > MAX_MSGBUF or not ring or wseq is None:
        warn(kvm, f"msgbuf: implausible header (size {size})")
        return None
    data = read_partial(kvm, ring, size)
    if len(data) < size:
        warn(kvm, f"msgbuf: only {len(data)} of {size} bytes readable")
        data = data + b"\0" * (size - len(data))
    w = wseq % size
    text = (data[w:] + data[:w]).replace(b"\0", b"")
    unread = b""
    if wseq >= SEQ_FACTOR * size or (rseq is not None and rseq >= SEQ_FACTOR * size):
        # The kernel keeps both modulo msg_seqmod = 16 * msg_size (SEQMOD()).
        warn(kvm, f"msgbuf: sequence numbers out of range (wseq {wseq}, rseq {rseq}, "
             f"size {size}); order and unread portion unreliable")
        rseq = None
    if rseq is not None:
        r = rseq % size
        if r != w:
            unread = data[r:w] if r < w else data[r:] + data[:w]
            unread = unread.replace(b"\0", b"")
    return MsgBuf(_text(text), _text(unread), "msgbufp", size, wseq, rseq)
