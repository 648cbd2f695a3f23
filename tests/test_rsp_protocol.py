"""RSP server protocol tests: a raw socket client against the server over a fake dump
(tests/fakedump.py: kernel structures in sparse memory, read by the real kstate code)."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import List

import pytest
from fakedump import PAGE, FakeDump, FakeKernel

from kvm_dbg.rsp import serve_target
from kvm_dbg.rsp.packets import PacketParser, checksum, escape, frame, unescape
from kvm_dbg.rsp.regs import AMD64, encode_regs, target_xml
from kvm_dbg.rsp.target import Target

BASE = 0xFFFFFFFF80200000
CRASHED_REGS = {"rbp": 0xFFFFFE0000011000, "rsp": 0xFFFFFE0000010FF0, "rip": BASE + 0x24,
                "rbx": 0xB0B0, "r12": 12, "r13": 13, "r14": 14, "r15": 15}


def pattern(i: int) -> bytes:
    """The bytes of kernel page ``i`` of the fake dump."""
    return bytes((j * 7 + i) & 0xFF for j in range(PAGE))


def fake_dump(writable: bool = False) -> FakeDump:
    """Four kernel pages at BASE (``hz`` = 100 at BASE + 0x100) and three threads:
    100001 crashed in sysctl (pid 806), 100000 swapper (pid 0), 100002 irq1 on the
    stopped CPU 1 (pid 12); a panic string and a message buffer."""
    kvm = FakeDump("amd64", writable=writable)
    for i in range(4):
        kvm.store(BASE + i * PAGE, pattern(i))
    kvm.define("hz", BASE + 0x100)
    kvm.put_int(BASE + 0x100, 100, 4)
    k = FakeKernel(kvm)
    k.add_proc(12, "intr", [(100002, "irq1: atkbd0", 1, {})])
    k.add_proc(0, "kernel", [(100000, "swapper", -1, {"rbp": 0xFFFFFE0000021000,
                                                     "rsp": 0xFFFFFE0000020FF0,
                                                     "rip": BASE + 0x65})])
    k.add_proc(806, "sysctl", [(100001, "sysctl", 0, {})])
    k.crash(100001, CRASHED_REGS)
    k.stop_cpu(1, {"rip": BASE + 0x3000})
    k.panic("test panic")
    k.message_buffer("<6>booting\nhello world\npanic: test\n", unread=len("panic: test\n"))
    return kvm


class Client:
    """A minimal RSP client speaking to the server over TCP."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.buf = b""
        self.ack = True

    def close(self) -> None:
        self.sock.close()

    def raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def read_byte(self) -> bytes:
        while not self.buf:
            self._fill()
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def read_packet(self) -> bytes:
        while True:
            start = self.buf.find(b"$")
            end = self.buf.find(b"#", start + 1) if start >= 0 else -1
            if start >= 0 and end >= 0 and len(self.buf) >= end + 3:
                body = self.buf[start + 1:end]
                assert int(self.buf[end + 1:end + 3], 16) == checksum(body)
                self.buf = self.buf[end + 3:]
                return body
            self._fill()

    def send(self, body: bytes) -> bytes:
        self.raw(frame(body))
        if self.ack:
            assert self.read_byte() == b"+"
        reply = self.read_packet()
        if self.ack:
            self.raw(b"+")
        return reply

    def noack(self) -> None:
        assert self.send(b"QStartNoAckMode") == b"OK"
        self.ack = False


@pytest.fixture
def server():
    """A listening server over a fresh fake dump; yields a client factory."""
    return _start(fake_dump())


def _start(kvm: FakeDump, writable: bool = False):
    ready = threading.Event()
    address: List[str] = []

    def on_ready(a: str) -> None:
        address.append(a)
        ready.set()

    t = threading.Thread(target=serve_target, args=(Target(kvm, writable=writable),),
                         kwargs={"ready": on_ready}, daemon=True)
    t.start()
    assert ready.wait(5)
    clients: List[Client] = []

    def connect() -> Client:
        c = Client(address[0])
        clients.append(c)
        return c
    return connect


def gdb_handshake(c: Client) -> None:
    assert b"PacketSize=" in c.send(b"qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+")
    c.noack()


# -- framing ----------------------------------------------------------------

def test_frame_and_checksum():
    assert frame(b"OK") == b"$OK#9a"
    assert checksum(b"") == 0


def test_escape_roundtrip():
    data = bytes(range(256))
    assert unescape(escape(data)) == data
    assert b"#" not in escape(b"a#b$c*d}")


def test_parser_events():
    p = PacketParser(max_size=16)
    events = list(p.feed(b"+-\x03$OK#9a$OK#00garbage"))
    kinds = [e[0] for e in events]
    assert kinds == ["ack", "nak", "break", "packet", "badsum"]
    assert list(p.feed(b"$" + b"x" * 100 + b"#00")) == [("oversized", b"")]
    assert list(p.feed(b"$O")) == [] and list(p.feed(b"K#9a")) == [("packet", b"OK")]


# -- handshake and acks -------------------------------------------------------

def test_ack_mode_and_bad_checksum(server):
    c = server()
    c.raw(b"$?#00")  # wrong checksum: NAK, no reply
    assert c.read_byte() == b"-"
    reply = c.send(b"?")
    assert reply.startswith(b"T05thread:186a1;")


def test_nak_resends_last_reply(server):
    c = server()
    reply = c.send(b"qAttached")
    assert reply == b"1"
    c.raw(b"-")
    assert c.read_packet() == b"1"


def test_noack_mode(server):
    c = server()
    gdb_handshake(c)
    c.raw(frame(b"qAttached"))
    assert c.read_packet() == b"1"
    assert c.buf == b""  # no '+' was sent


def test_unknown_and_empty_packets(server):
    c = server()
    gdb_handshake(c)
    assert c.send(b"vMustReplyEmpty") == b""
    assert c.send(b"qTStatus") == b""
    assert c.send(b"Z0,ffffffff80200024,1") == b""
    assert c.send(b"vCont?") == b""


# -- stop replies, threads, registers ------------------------------------------

def test_stop_reply_expedites_registers(server):
    c = server()
    gdb_handshake(c)
    reply = c.send(b"?").decode()
    assert reply.startswith("T05thread:186a1;")
    assert "hexname:" + b"(pid 806) sysctl (crashed)".hex() in reply
    assert f"10:{(BASE + 0x24).to_bytes(8, 'little').hex()};" in reply  # rip
    assert "6:0010010000feffff;" in reply  # rbp


def test_thread_list_and_names(server):
    c = server()
    gdb_handshake(c)
    assert c.send(b"qfThreadInfo") == b"m186a1,186a0,186a2"
    assert c.send(b"qsThreadInfo") == b"l"
    xml = c.send(b"qXfer:threads:read::0,1000")
    assert xml.startswith(b"l")
    assert b'<thread id="186a2" core="1" name="(pid 12) intr/irq1: atkbd0 (on CPU 1)">' in xml
    assert bytes.fromhex(c.send(b"qThreadExtraInfo,186a0").decode()) == b"(pid 0) kernel/swapper"
    assert c.send(b"T186a0") == b"OK"
    assert c.send(b"T1") == b"E02"
    assert c.send(b"qC") == b"QC186a1"
    assert c.send(b"qAttached") == b"1"


def test_g_reports_unavailable_as_xx_for_gdb(server):
    c = server()
    gdb_handshake(c)
    g = c.send(b"g").decode()
    assert len(g) == 2 * (16 * 8 + 8 + 4 + 6 * 4 + 8 * 10 + 8 * 4)
    assert g[:16] == "xx" * 8  # rax
    assert g[16:32] == (0xB0B0).to_bytes(8, "little").hex()  # rbx
    assert c.send(b"p10") == (BASE + 0x24).to_bytes(8, "little").hex().encode()
    assert c.send(b"p0") == b"xx" * 8
    assert c.send(b"p12") == b"20000000"  # cs: the kernel code selector, as kgdb serves it
    assert c.send(b"p14") == b"xx" * 4  # ds: 32 bits, in no structure
    assert c.send(b"p18") == b"xx" * 10  # st0: 80 bits
    assert c.send(b"p99") == b"E16"


def test_hg_switches_register_thread(server):
    c = server()
    gdb_handshake(c)
    assert c.send(b"Hg186a0") == b"OK"
    assert c.send(b"p10") == (BASE + 0x65).to_bytes(8, "little").hex().encode()
    assert c.send(b"p2") == b"xx" * 8  # rcx: not in a PCB
    assert c.send(b"Hg0") == b"OK"  # "any thread" keeps the current one
    assert c.send(b"p10") == (BASE + 0x65).to_bytes(8, "little").hex().encode()
    assert c.send(b"Hgdead") == b"E02"
    assert c.send(b"Hgp1.186a2") == b"OK"  # multiprocess form
    assert c.send(b"p10") == (BASE + 0x3000).to_bytes(8, "little").hex().encode()


def test_lldb_gets_errors_for_unavailable_registers(server):
    c = server()
    assert c.send(b"QStartNoAckMode") == b"OK"  # lldb asks before qSupported
    c.ack = False
    c.send(b"qSupported:xmlRegisters=i386,arm,mips,arc;multiprocess+")
    assert c.send(b"p0") == b"00" * 8  # the p0 probe must succeed
    assert c.send(b"p0") == b"E0e"
    assert c.send(b"p2") == b"E0e"
    assert c.send(b"p1") == (0xB0B0).to_bytes(8, "little").hex().encode()
    stop = c.send(b"qThreadStopInfo186a0").decode()
    assert stop.startswith("T00thread:186a0;hexname:" + b"(pid 0) kernel/swapper".hex())


def test_lldb_extras(server):
    c = server()
    assert c.send(b"QStartNoAckMode") == b"OK"
    c.ack = False
    sup = c.send(b"qSupported:xmlRegisters=i386,arm,mips,arc;multiprocess+").decode()
    assert "qXfer:auxv:read+" in sup
    host = c.send(b"qHostInfo").decode()
    fields = dict(kv.split(":", 1) for kv in host.rstrip(";").split(";"))
    assert bytes.fromhex(fields["triple"]) == b"x86_64-unknown-freebsd"
    assert fields["ptrsize"] == "8" and fields["endian"] == "little"
    assert b"pid:1;" in c.send(b"qProcessInfo")
    auxv = c.send(b"qXfer:auxv:read::0,1000")
    assert auxv[:1] == b"l"
    data = unescape(auxv[1:])
    assert int.from_bytes(data[:8], "little") == 9  # AT_ENTRY
    assert int.from_bytes(data[8:16], "little") == FakeDump.kernel_entry
    threads = json.loads(unescape(c.send(b"jThreadsInfo")))
    assert [t["tid"] for t in threads] == [100001, 100000, 100002]
    assert threads[0]["name"] == "(pid 806) sysctl (crashed)"
    # unsupported: a page missing from a dump is not unmapped memory
    assert c.send(b"qMemoryRegionInfo:ffffffff80200010") == b""
    assert c.send(b"qMemoryRegionInfo:1000") == b""


def test_target_xml_chunked(server):
    c = server()
    gdb_handshake(c)
    full = target_xml(AMD64).encode()
    got, off = b"", 0
    while True:
        r = c.send(f"qXfer:features:read:target.xml:{off:x},100".encode())
        got += unescape(r[1:])
        off += len(unescape(r[1:]))
        if r[:1] == b"l":
            break
        assert r[:1] == b"m"
    assert got == full
    assert got.count(b"<reg ") == 40
    assert c.send(b"qXfer:features:read:other.xml:0,100") == b"E00"
    assert c.send(f"qXfer:features:read:target.xml:{len(full):x},100".encode()) == b"l"


# -- memory ---------------------------------------------------------------------

def test_m_reads_and_partial_reads(server):
    c = server()
    gdb_handshake(c)
    assert c.send(b"mffffffff80200100,4") == b"64000000"
    # 8 readable bytes before an unmapped page: only the prefix comes back
    tail = c.send(b"mffffffff80203ff8,10")
    assert len(tail) == 16
    assert c.send(b"m0,8") == b"E14"
    assert c.send(b"mffffffff80204000,1") == b"E14"
    assert c.send(b"mzz,1") == b"E16"


def test_binary_x_only_after_probe(server):
    c = server()
    gdb_handshake(c)
    assert c.send(b"xffffffff80200100,4") == b""
    assert c.send(b"x0,0") == b"OK"
    data = unescape(c.send(b"xffffffff80200000,100"))
    assert data == pattern(0)[:0x100]
    assert c.send(b"x0,4") == b"E14"


def test_writes_refused_when_read_only(server):
    c = server()
    gdb_handshake(c)
    assert c.send(b"Mffffffff80200100,4:05000000") == b"E0d"
    assert c.send(b"Xffffffff80200100,1:\x05") == b"E0d"
    assert c.send(b"G" + b"00" * 8) == b"E0d"
    assert c.send(b"mffffffff80200100,4") == b"64000000"


def test_writes_allowed_when_writable():
    kvm = fake_dump(writable=True)
    c = _start(kvm, writable=True)()
    gdb_handshake(c)
    assert c.send(b"Mffffffff80200100,4:05000000") == b"OK"
    assert c.send(b"mffffffff80200100,4") == b"05000000"
    assert c.send(b"Xffffffff80200100,2:" + escape(b"#}")) == b"OK"
    assert kvm.read(BASE + 0x100, 2) == b"#}"
    assert c.send(b"M0,1:00") == b"E14"


# -- resume, monitor, symbols ------------------------------------------------------

def test_resume_reply_does_not_loop(server):
    c = server()
    gdb_handshake(c)
    expected = (b"T00thread:186a1;reason:exception;description:"
                + b"crash dump: cannot resume".hex().encode() + b";")
    assert c.send(b"s") == expected
    assert c.send(b"c") == expected
    assert c.send(b"vCont;s:186a0;c").startswith(b"T00thread:186a0;")
    # gdb assumes the register thread follows the stop reply
    assert c.send(b"p10") == (BASE + 0x65).to_bytes(8, "little").hex().encode()


def test_monitor_and_query(server):
    c = server()
    gdb_handshake(c)
    c.raw(frame(b"qRcmd," + b"ps".hex().encode()))
    out = b""
    while True:
        p = c.read_packet()
        if p == b"OK":
            break
        assert p[:1] == b"O"
        out += bytes.fromhex(p[1:].decode())
    assert b"sysctl" in out
    info = c.send(b"qKvm:" + b"info".hex().encode() + b":0,1000")
    assert info[:1] == b"l" and b"test panic" in bytes.fromhex(info[1:].decode())
    part = c.send(b"qKvm:" + b"dmesg".hex().encode() + b":0,5")
    assert part[:1] == b"m" and bytes.fromhex(part[1:].decode()) == b"<6>bo"
    err = c.send(b"qKvm:" + b"nosuch".hex().encode() + b":0,100")
    assert err[:1] == b"e" and b"unknown command" in bytes.fromhex(err[1:].decode())
    tid = c.send(b"qKvm:" + b"proc 12".hex().encode() + b":0,100")
    assert bytes.fromhex(tid[1:].decode()).split()[:2] == [b"186a2", b"100002"]


def test_qsymbol_without_table_is_ok(server):
    c = server()
    gdb_handshake(c)
    assert c.send(b"qSymbol::") == b"OK"


def test_qsymbol_asks_for_missing_names():
    from kvm_dbg.rsp.session import Session
    from kvm_dbg.rsp.symbols import SymbolTable
    table = SymbolTable({"allproc": 0x1000, "zombproc": None})
    s = Session(Target(fake_dump()), table, ["allproc", "zombproc", "dumptid", "hz"])
    assert s.handle(b"qSymbol::").replies == [b"qSymbol:" + b"dumptid".hex().encode()]
    r = s.handle(b"qSymbol:ffffffff80202338:" + b"dumptid".hex().encode())
    assert r.replies == [b"qSymbol:" + b"hz".hex().encode()]
    assert s.handle(b"qSymbol::" + b"hz".hex().encode()).replies == [b"OK"]
    assert table("dumptid") == 0xFFFFFFFF80202338 and table("hz") is None


# -- robustness ----------------------------------------------------------------------

def test_oversized_packet_gets_error_and_session_survives(server):
    c = server()
    gdb_handshake(c)
    c.raw(b"$" + b"M" * (1 << 19) + b"#00")
    assert c.read_packet() == b"E16"
    assert c.send(b"qAttached") == b"1"


def test_malformed_packets(server):
    c = server()
    gdb_handshake(c)
    for bad in (b"m", b"m1", b"p", b"pzz", b"H", b"Hx1", b"qXfer:features:read:target.xml:zz",
                b"qThreadExtraInfo,zz", b"M1,2", b"X", b"qRcmd,zz", b"\xff\xfe"):
        reply = c.send(bad)
        assert reply[:1] in (b"E", b"") or reply.startswith(b"O"), (bad, reply)
    assert c.send(b"qAttached") == b"1"


def test_detach_then_reconnect(server):
    c = server()
    gdb_handshake(c)
    assert c.send(b"D") == b"OK"
    with pytest.raises(EOFError):
        c.read_byte()
    c2 = server()
    gdb_handshake(c2)
    assert c2.send(b"?").startswith(b"T05")
    c2.raw(frame(b"vKill;a410"))
    assert c2.read_packet() == b"OK"
    c3 = server()
    c3.raw(b"+" + frame(b"k"))
    assert c3.read_byte() == b"+"
    with pytest.raises(EOFError):
        c3.read_byte()
    c4 = server()
    gdb_handshake(c4)
    assert c4.send(b"qAttached") == b"1"


def test_abrupt_disconnect_keeps_listener(server):
    c = server()
    c.raw(b"$qSupp")  # half a packet, then gone
    c.close()
    time.sleep(0.05)
    c2 = server()
    gdb_handshake(c2)
    assert c2.send(b"qAttached") == b"1"


def test_register_encoding_big_endian():
    rs = AMD64
    values = {"rip": 0x1122334455667788}
    enc = encode_regs(rs, values, "big")
    off = 16 * 16
    assert enc[off:off + 16] == "1122334455667788"


