"""One debugger connection: the packet dispatcher and its per-connection state.

``Session.handle(body)`` maps one packet body to a list of reply bodies
(usually one; ``qRcmd`` sends ``O`` packets first) and says when the
connection should close.  A malformed packet gets ``E16``.  A bug (an
exception nobody planned for) gets ``E01`` too, so the connection survives,
but it is never quiet: its traceback goes to the server's stderr and its
message to ``Target.errors``, which ``kvm-info`` and ``kvm-open`` show.
Client quirks (gdb vs lldb) are detected from the handshake.
"""

from __future__ import annotations

import json
import struct
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from . import monitor
from .messages import error_line
from .packets import escape
from .regs import encode_reg, encode_regs, expedited, lldb_triple, reg_value, target_xml
from .symbols import SymbolTable
from .target import Target, TargetThread

PACKET_SIZE = 0x20000
RESUME_DESCRIPTION = "crash dump: cannot resume"
E_FAULT = b"E14"      # EFAULT: memory not readable
E_PERM = b"E0d"       # EACCES: writes refused
E_INVAL = b"E16"      # EINVAL: malformed packet
E_NOENT = b"E02"      # unknown thread
E_UNAVAIL = b"E0e"    # register not in the dump (lldb)
AT_ENTRY, AT_NULL = 9, 0


def _hex(s: str) -> str:
    return s.encode("utf-8", "replace").hex()


class MalformedPacket(Exception):
    """The client sent a packet we cannot parse (answered with E16)."""


def _num(s: str) -> int:
    """A hex number from a packet field."""
    try:
        return int(s, 16)
    except ValueError:
        raise MalformedPacket(s) from None


def _fields(s: str, sep: str, n: int) -> List[str]:
    """Exactly ``n`` fields of ``s`` split at ``sep`` (the last keeps the rest)."""
    parts = s.split(sep, n - 1)
    if len(parts) != n:
        raise MalformedPacket(s)
    return parts


def _unhex_bytes(s: str) -> bytes:
    try:
        return bytes.fromhex(s)
    except ValueError:
        raise MalformedPacket(s) from None


def _unhex(s: str) -> str:
    return _unhex_bytes(s).decode("utf-8", "replace")


def _xml_attr(s: str) -> str:
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _addr_len(args: str) -> Tuple[int, int]:
    a, n = _fields(args, ",", 2)
    return _num(a), _num(n)


def _chunk(data: bytes, args: str, binary: bool = True) -> bytes:
    """qXfer-style ``m``/``l`` reply for the window ``off,len`` of ``data``."""
    off, n = _addr_len(args)
    part = data[off:off + n]
    more = off + n < len(data)
    body = escape(part) if binary else part.hex().encode()
    return (b"m" if more else b"l") + body


@dataclass
class Result:
    """Replies to send, and whether the connection ends afterwards."""

    replies: List[bytes] = field(default_factory=list)
    close: bool = False
    noack_after: bool = False


class Session:
    """Protocol state for one client connection."""

    def __init__(self, target: Target, symbols: Optional[SymbolTable] = None,
                 wanted_symbols: Optional[List[str]] = None) -> None:
        self.target = target
        self.symbols = symbols
        self.wanted = list(wanted_symbols or [])
        self.client = ""               # "gdb" or "lldb" once known
        self.seen_qsupported = False
        self.x_enabled = False
        self.g_thread: TargetThread = target.current
        self.c_thread: TargetThread = target.current
        self._ask: List[str] = []
        self._p_probed = False
        self._xml = target_xml(target.regset).encode()
        self._texts: Dict[str, bytes] = {}

    # -- helpers -----------------------------------------------------------

    @property
    def lldb(self) -> bool:
        return self.client == "lldb"

    def _thread_arg(self, s: str) -> Optional[TargetThread]:
        if "." in s:  # multiprocess form p<pid>.<tid>
            s = s.split(".", 1)[1]
        s = s.lstrip("p")
        if s in ("0", "-1", ""):
            return self.g_thread
        try:
            return self.target.thread(int(s, 16))
        except ValueError:          # not a thread id: no such thread
            return None

    def stop_reply(self, t: TargetThread, resume: bool = False) -> bytes:
        rs, bo = self.target.regset, self.target.byteorder
        if resume:
            return (f"T00thread:{t.rid:x};reason:exception;"
                    f"description:{_hex(RESUME_DESCRIPTION)};").encode()
        sig = 5 if t.crashed or t is self.target.current else 0
        text = f"T{sig:02x}thread:{t.rid:x};hexname:{_hex(t.name)};"
        return (text + expedited(rs, t.registers, bo)).encode()

    def _threads_xml(self) -> bytes:
        lines = ['<?xml version="1.0"?>', "<threads>"]
        for t in self.target.threads:
            core = f' core="{t.oncpu}"' if t.oncpu >= 0 else ""
            lines.append(f'  <thread id="{t.rid:x}"{core} name="{_xml_attr(t.name)}">'
                         f"tid {t.tid}</thread>")
        lines.append("</threads>")
        return "\n".join(lines).encode()

    def _auxv(self) -> bytes:
        fmt = ("<" if self.target.byteorder == "little" else ">") + \
              ("QQ" if self.target.ptrsize == 8 else "II")
        return struct.pack(fmt, AT_ENTRY, self.target.entry()) + struct.pack(fmt, AT_NULL, 0)

    def _text(self, cmd: str, fresh: bool) -> bytes:
        if fresh or cmd not in self._texts:
            try:
                self._texts[cmd] = monitor.run(self.target, cmd).encode("utf-8", "replace")
            except monitor.MonitorError as e:
                self._texts.pop(cmd, None)
                raise e
        return self._texts[cmd]

    # -- dispatch ----------------------------------------------------------

    def handle(self, body: bytes) -> Result:
        pkt = body.decode("latin-1")
        try:
            return self._dispatch(pkt, body)
        except MalformedPacket:
            return Result([E_INVAL])
        except Exception as e:  # noqa: BLE001 - a bug: recorded and shown, see module doc
            traceback.print_exc()
            message = f"internal error answering {pkt[:40]!r}: {type(e).__name__}: {e}"
            error_line(message)
            self.target.errors.append(message)
            return Result([b"E01"])

    def _dispatch(self, pkt: str, raw: bytes) -> Result:
        if not pkt:
            return Result([b""])
        c = pkt[0]
        if c == "?":
            self.g_thread = self.target.current
            return Result([self.stop_reply(self.g_thread)])
        if c == "g":
            t = self._suffix_thread(pkt) or self.g_thread
            return Result([encode_regs(self.target.regset, t.registers,
                                       self.target.byteorder).encode()])
        if c == "p":
            return Result([self._read_reg(pkt)])
        if c in "GP":
            return Result([E_PERM])
        if c == "m":
            return Result([self._read_mem(pkt[1:], binary=False)])
        if c == "x":
            return Result([self._x(pkt[1:])])
        if c == "M":
            spec, data = _fields(pkt[1:], ":", 2)
            return Result([self._write(spec, _unhex_bytes(data))])
        if c == "X":
            spec = _fields(pkt[1:], ":", 2)[0]
            data = raw[raw.index(b":") + 1:]
            from .packets import unescape
            return Result([self._write(spec, unescape(data))])
        if c == "H":
            return Result([self._set_thread(pkt)])
        if c == "T":
            return Result([b"OK" if self._thread_arg(pkt[1:]) else E_NOENT])
        if c in "cCsS":
            return Result([self._resume(self.c_thread)])
        if c in "zZ":
            return Result([b""])
        if c == "D":
            return Result([b"OK"], close=True)
        if c == "k":
            return Result([], close=True)
        if c == "q" or c == "Q" or c == "v" or c == "j" or c == "_":
            return self._query(pkt, raw)
        return Result([b""])

    def _suffix_thread(self, pkt: str) -> Optional[TargetThread]:
        if ";thread:" not in pkt:
            return None
        tid = pkt.split(";thread:", 1)[1].rstrip(";")
        return self._thread_arg(tid)

    def _read_reg(self, pkt: str) -> bytes:
        t = self._suffix_thread(pkt) or self.g_thread
        num = _num(pkt[1:].split(";", 1)[0])
        reg = self.target.regset.by_num.get(num)
        if reg is None:
            return E_INVAL
        value = reg_value(self.target.regset, reg, t.registers)
        if value is None and self.lldb:
            if not self._p_probed:
                # lldb's first p (the p0 probe) decides whether it uses p at all;
                # an error there makes it read everything with g and show 0xcc.
                self._p_probed = True
                return encode_reg(reg, 0, self.target.byteorder).encode()
            return E_UNAVAIL
        self._p_probed = True
        return encode_reg(reg, value, self.target.byteorder).encode()

    def _read_mem(self, args: str, binary: bool) -> bytes:
        addr, n = _addr_len(args)
        n = min(n, PACKET_SIZE // 2 - 16)
        if n == 0:
            return b"OK" if binary else b""
        data = self.target.read(addr, n)
        if not data:
            return E_FAULT
        return escape(data) if binary else data.hex().encode()

    def _x(self, args: str) -> bytes:
        if args == "0,0":
            self.x_enabled = True
            return b"OK"
        if not self.x_enabled:
            return b""
        return self._read_mem(args, binary=True)

    def _write(self, spec: str, data: bytes) -> bytes:
        addr, n = _addr_len(spec)
        if not self.target.writable:
            return E_PERM
        if n == 0:
            return b"OK"
        if len(data) != n:
            return E_INVAL
        return b"OK" if self.target.write(addr, data) else E_FAULT

    def _set_thread(self, pkt: str) -> bytes:
        if len(pkt) < 2 or pkt[1] not in "gc":
            return E_INVAL
        t = self._thread_arg(pkt[2:])
        if t is None:
            return E_NOENT
        if pkt[1] == "g":
            self.g_thread = t
        else:
            self.c_thread = t
        return b"OK"

    def _resume(self, t: TargetThread) -> bytes:
        self.g_thread = t  # gdb assumes Hg follows the last stop reply
        return self.stop_reply(t, resume=True)

    # -- q/Q/v/j packets ---------------------------------------------------

    def _query(self, pkt: str, raw: bytes) -> Result:
        name, _, args = pkt.partition(":")
        if pkt.startswith("qRcmd,"):
            return self._rcmd(_unhex(pkt[6:]))
        if pkt.startswith("qThreadExtraInfo,"):
            t = self._thread_arg(pkt.split(",", 1)[1])
            return Result([_hex(t.name).encode() if t else E_NOENT])
        if pkt.startswith("qThreadStopInfo"):
            self.client = self.client or "lldb"
            t = self._thread_arg(pkt[len("qThreadStopInfo"):])
            return Result([self.stop_reply(t) if t else E_NOENT])
        if pkt.startswith("qMemoryRegionInfo"):
            # Not supported: a dump cannot tell a page's permissions, and a
            # page missing from it is not unmapped.  lldb takes a region
            # without permissions for non-executable memory and stops
            # unwinding at a return address there.
            return Result([b""])
        if pkt.startswith("vCont"):
            if pkt == "vCont?":
                return Result([b""])
            t = self.c_thread
            for action in pkt.split(";")[1:]:
                if ":" in action:
                    t = self._thread_arg(action.split(":", 1)[1]) or t
                    break
            return Result([self._resume(t)])
        if pkt.startswith("vKill"):
            return Result([b"OK"], close=True)
        handler = self._QUERIES.get(name)
        if handler is None:
            return Result([b""])
        return handler(self, args)

    def _q_supported(self, args: str) -> Result:
        features = args.split(";")
        if not self.client:
            gdb_like = any(f in features for f in ("swbreak+", "vContSupported+", "no-resumed+"))
            self.client = "gdb" if gdb_like else "lldb"
        self.seen_qsupported = True
        reply = [f"PacketSize={PACKET_SIZE:x}", "qXfer:features:read+", "qXfer:threads:read+",
                 "QStartNoAckMode+", "qSymbol+"]
        if self.lldb:
            reply.append("qXfer:auxv:read+")
        return Result([";".join(reply).encode()])

    def _q_noack(self, _args: str) -> Result:
        if not self.seen_qsupported:
            self.client = "lldb"  # lldb asks before qSupported, gdb after
        return Result([b"OK"], noack_after=True)

    def _q_xfer(self, args: str) -> Result:
        obj, op, annex, window = _fields(args, ":", 4)
        if op != "read":
            return Result([b""])
        if obj == "features":
            if annex != "target.xml":
                return Result([b"E00"])
            return Result([_chunk(self._xml, window)])
        if obj == "threads":
            return Result([_chunk(self._threads_xml(), window)])
        if obj == "auxv":
            return Result([_chunk(self._auxv(), window)])
        return Result([b""])

    def _q_thread_info(self, _args: str) -> Result:
        return Result([("m" + ",".join(f"{t.rid:x}" for t in self.target.threads)).encode()])

    def _q_symbol(self, args: str) -> Result:
        if args == ":":
            self._ask = self.symbols.missing(self.wanted) if self.symbols else []
        else:
            value, _, hexname = args.partition(":")
            if hexname and self.symbols is not None:
                name = _unhex(hexname)
                self.symbols.learn(name, _num(value) if value else None)
                if name in self._ask:
                    self._ask.remove(name)
        if self._ask:
            return Result([("qSymbol:" + _hex(self._ask[0])).encode()])
        return Result([b"OK"])

    def _host_info(self, _args: str) -> Result:
        self.client = self.client or "lldb"
        t = self.target
        triple = lldb_triple(t.regset, t.byteorder)
        info = (f"triple:{_hex(triple)};ostype:freebsd;vendor:unknown;"
                f"endian:{t.byteorder};ptrsize:{t.ptrsize};")
        return Result([info.encode()])

    def _process_info(self, args: str) -> Result:
        reply = self._host_info(args).replies[0]
        return Result([b"pid:1;" + reply])

    def _threads_info(self, _args: str) -> Result:
        self.client = self.client or "lldb"
        rs, bo = self.target.regset, self.target.byteorder
        out = []
        for t in self.target.threads:
            regs = {str(r.regnum): encode_reg(r, reg_value(rs, r, t.registers), bo)
                    for r in rs.regs if r.role and reg_value(rs, r, t.registers) is not None}
            item = {"tid": t.rid, "name": t.name, "registers": regs}
            if t is self.target.current:
                item.update(reason="signal", signal=5)
            out.append(item)
        return Result([escape(json.dumps(out).encode())])

    def _kvm_query(self, args: str) -> Result:
        """``qKvm:<hex command>:off,len`` -> m/l + hex text; ``e`` + hex message on error."""
        cmd_hex, _, window = args.partition(":")
        cmd = _unhex(cmd_hex)
        try:
            text = self._text(cmd, fresh=window.startswith("0,"))
        except monitor.MonitorError as e:
            return Result([("e" + _hex(str(e))).encode()])
        return Result([_chunk(text, window or f"0,{PACKET_SIZE // 4:x}", binary=False)])

    def _rcmd(self, line: str) -> Result:
        try:
            text = monitor.run(self.target, line)
        except monitor.MonitorError as e:
            text = f"{e}\n"
        replies = [b"O" + text[i:i + 2000].encode("utf-8", "replace").hex().encode()
                   for i in range(0, len(text), 2000)]
        return Result(replies + [b"OK"])

    def _empty(self, _args: str) -> Result:
        return Result([b""])

    def _lldb_empty(self, _args: str) -> Result:
        self.client = self.client or "lldb"
        return Result([b""])

    def _q_c(self, _args: str) -> Result:
        return Result([f"QC{self.g_thread.rid:x}".encode()])

    _QUERIES: Dict[str, Callable[[Session, str], Result]] = {
        "qSupported": _q_supported, "QStartNoAckMode": _q_noack, "qXfer": _q_xfer,
        "qfThreadInfo": _q_thread_info, "qsThreadInfo": lambda self, _a: Result([b"l"]),
        "qC": _q_c, "qAttached": lambda self, _a: Result([b"1"]), "qSymbol": _q_symbol,
        "qHostInfo": _host_info, "qProcessInfo": _process_info, "jThreadsInfo": _threads_info,
        "QThreadSuffixSupported": _lldb_empty, "QListThreadsInStopReply": _lldb_empty,
        "vMustReplyEmpty": _empty, "qKvm": _kvm_query,
    }
