"""GDB remote-serial-protocol framing: checksums, escapes, acks, a stream parser.

The parser is fed raw bytes and yields events; it never raises on garbage.
Packets longer than ``max_size`` are swallowed and reported as ``OVERSIZED``
so the session can answer with an error instead of buffering without bound.
"""

from __future__ import annotations

from typing import Iterator, List, Tuple

ACK = b"+"
NAK = b"-"
INTERRUPT = b"\x03"

# Events produced by PacketParser.feed: (kind, payload)
PACKET = "packet"        # payload: unescaped packet body (bytes); checksum verified
BAD_CHECKSUM = "badsum"  # payload: body as received
OVERSIZED = "oversized"  # payload: b""
ACKED = "ack"
NAKED = "nak"
BREAK = "break"

_ESCAPED = frozenset(b"$#}*")


def checksum(data: bytes) -> int:
    """Modulo-256 sum of the packet body."""
    return sum(data) & 0xFF


def frame(body: bytes) -> bytes:
    """``$body#cs``; ``body`` must already be escaped if it is binary."""
    return b"$" + body + b"#" + b"%02x" % checksum(body)


def escape(data: bytes) -> bytes:
    """Binary escaping for x/qXfer replies: ``}`` then the byte xor 0x20."""
    if not any(b in _ESCAPED for b in data):
        return data
    out = bytearray()
    for b in data:
        if b in _ESCAPED:
            out += bytes((0x7D, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    """Undo :func:`escape` (used for the binary part of ``X`` packets)."""
    if b"}" not in data:
        return data
    out = bytearray()
    it = iter(data)
    for b in it:
        if b == 0x7D:
            nxt = next(it, None)
            if nxt is None:
                break
            out.append(nxt ^ 0x20)
        else:
            out.append(b)
    return bytes(out)


class PacketParser:
    """Incremental parser of the client's byte stream.

    ``verify`` can be switched off once no-ack mode is on (like gdbserver,
    which then trusts the transport).
    """

    def __init__(self, max_size: int = 1 << 20) -> None:
        self.max_size = max_size
        self.verify = True
        self._buf = bytearray()
        self._in_packet = False
        self._discard = False
        self._sum_left = -1
        self._sum = bytearray()

    def feed(self, data: bytes) -> Iterator[Tuple[str, bytes]]:
        events: List[Tuple[str, bytes]] = []
        for b in data:
            if self._sum_left > 0:
                self._sum.append(b)
                self._sum_left -= 1
                if self._sum_left == 0:
                    events.append(self._finish())
                continue
            if not self._in_packet:
                if b == 0x24:  # $
                    self._start()
                elif b == 0x2B:
                    events.append((ACKED, b""))
                elif b == 0x2D:
                    events.append((NAKED, b""))
                elif b == 0x03:
                    events.append((BREAK, b""))
                continue  # other noise between packets is ignored
            if b == 0x23:  # '#'
                self._sum_left = 2
                self._sum = bytearray()
            elif b == 0x24:  # a new '$' inside a packet: the old one was truncated
                self._start()
            elif not self._discard:
                self._buf.append(b)
                if len(self._buf) > self.max_size:
                    self._discard = True
                    self._buf = bytearray()
        return iter(events)

    def _start(self) -> None:
        self._in_packet = True
        self._discard = False
        self._buf = bytearray()
        self._sum_left = -1

    def _finish(self) -> Tuple[str, bytes]:
        body = bytes(self._buf)
        discarded = self._discard
        self._in_packet = False
        self._discard = False
        self._sum_left = -1
        self._buf = bytearray()
        if discarded:
            return (OVERSIZED, b"")
        if self.verify:
            try:
                ok = int(self._sum.decode("ascii"), 16) == checksum(body)
            except ValueError:
                ok = False
            if not ok:
                return (BAD_CHECKSUM, body)
        return (PACKET, body)
