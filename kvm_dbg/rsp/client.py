"""Client side of the ``qKvm`` query packet, for adapters that send raw packets.

``qKvm:<hex command>:<offset>,<length>`` answers like qXfer (``m``/``l`` plus
hex text) or ``e`` plus a hex error message.  An adapter sends the packet
(gdb: ``maint packet``; lldb: ``process plugin packet send``) and feeds the
printed reply to :func:`decode_reply` until it is the last chunk.
"""

from __future__ import annotations

import re
from typing import Callable, Tuple

CHUNK = 0x7000


class QueryError(Exception):
    """The server refused the query; the message is meant for the user."""


def query_packet(command: str, offset: int, length: int = CHUNK) -> str:
    return f"qKvm:{command.encode('utf-8').hex()}:{offset:x},{length:x}"


_REPLY = re.compile(r'received:\s*"([^"]*)"')


def decode_reply(printed: str) -> Tuple[bytes, bool]:
    """(chunk bytes, more follows) from a reply or from gdb's ``received: "..."`` line."""
    m = _REPLY.search(printed)
    reply = (m.group(1) if m else printed).strip()
    if reply.startswith("e"):
        raise QueryError(bytes.fromhex(reply[1:]).decode("utf-8", "replace"))
    if not reply or reply[0] not in "ml":
        raise QueryError("the connected target does not answer kvm_dbg queries "
                         f"(reply {reply[:40]!r})")
    return bytes.fromhex(reply[1:]), reply[0] == "m"


def run_query(command: str, send: Callable[[str], str]) -> str:
    """The whole text of a query, with ``send(packet) -> printed reply``."""
    out = bytearray()
    while True:
        chunk, more = decode_reply(send(query_packet(command, len(out))))
        out += chunk
        if not more or not chunk:
            return out.decode("utf-8", "replace")
