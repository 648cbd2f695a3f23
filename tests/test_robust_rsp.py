"""RSP server robustness over a real fixture dump: malformed, oversized and
bad-checksum packets, abrupt disconnects, a second client, huge reads; and the
gdb adapter reporting a killed server in one clear line."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
from typing import List

import pytest
from test_fuzz_harness import fixture_target
from test_rsp_protocol import Client

import kvm_dbg
from kvm_dbg.rsp import serve_target
from kvm_dbg.rsp.packets import frame
from kvm_dbg.rsp.session import PACKET_SIZE
from kvm_dbg.rsp.target import Target


@pytest.fixture(scope="module")
def fixture_dump(tmp_path_factory):
    t = fixture_target("amd64-minidump-v3", "amd64", "minidump", 3, {},
                       str(tmp_path_factory.mktemp("rsprob")))
    return t


@pytest.fixture
def server(fixture_dump):
    kvm = kvm_dbg.open(fixture_dump.kernel, fixture_dump.core)
    ready = threading.Event()
    address: List[str] = []

    def on_ready(a: str) -> None:
        address.append(a)
        ready.set()

    th = threading.Thread(target=serve_target, args=(Target(kvm),), kwargs={"ready": on_ready},
                          daemon=True)
    th.start()
    assert ready.wait(10)
    clients: List[Client] = []

    def connect() -> Client:
        c = Client(address[0])
        clients.append(c)
        return c
    yield connect, th, fixture_dump
    for c in clients:
        c.close()


def _alive(connect) -> None:
    c = connect()
    assert c.send(b"?").startswith(b"T")
    c.close()


def test_garbage_checksums_and_oversized(server):
    connect, th, _t = server
    c = connect()
    c.raw(b"$m0,4#zz")                         # non-hex checksum
    assert c.read_byte() == b"-"
    c.raw(b"$qC#00")                           # wrong checksum
    assert c.read_byte() == b"-"
    c.raw(b"\x00\xff+++---garbage")            # noise between packets
    c.raw(frame(b"X" * (4 * PACKET_SIZE)))     # oversized: swallowed, E16
    assert c.read_byte() == b"+"
    assert c.read_packet() == b"E16"
    c.raw(b"+")
    for body in (b"m", b"mzz,zz", b"m-1,-1", b"Hgzz", b"p", b"pzz", b"qXfer:::",
                 b"qRcmd,zz", b"M0,1:zz", b"X0,1:", b"vCont;c:zz", b"\xff\xfe"):
        reply = c.send(body)
        assert reply == b"" or reply[:1] in (b"E", b"O", b"T", b"l", b"m", b"Q") or \
            reply.isalnum(), (body, reply)
    assert th.is_alive()
    assert c.send(b"?").startswith(b"T")


def test_huge_m_reads_are_capped_and_fast(server):
    connect, _th, t = server
    c = connect()
    c.noack()
    for addr in [0, 0xFFFF800000000000, (1 << 64) - 0x1000] + t.addrs[:4]:
        t0 = time.monotonic()
        reply = c.send(f"m{addr:x},7fffffff".encode())
        assert time.monotonic() - t0 < 2.0, hex(addr)
        assert len(reply) <= PACKET_SIZE, hex(addr)
    assert c.send(b"m0,ffffffffffffffffffff") in (b"E14", b"E16")


def test_abrupt_disconnects_mid_packet(server):
    connect, th, _t = server
    for junk in (b"$m0,10", b"$", b"$qSupported:" + b"a" * 70000, b"+", b""):
        c = connect()
        c.raw(junk)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        c.close()                              # RST, not FIN
    time.sleep(0.2)
    assert th.is_alive()
    _alive(connect)


def test_second_client_waits_and_first_is_not_disturbed(server):
    """One client at a time: a second connection is queued, never breaks the first,
    and is served as soon as the first leaves."""
    connect, th, _t = server
    first = connect()
    assert first.send(b"?").startswith(b"T")
    second = connect()
    second.raw(frame(b"?"))
    for _ in range(5):
        assert first.send(b"qC").startswith(b"QC")
    assert first.send(b"D") == b"OK"
    first.close()
    second.sock.settimeout(5)
    assert second.read_byte() == b"+"
    assert second.read_packet().startswith(b"T")
    assert th.is_alive()


def test_client_that_never_reads(server):
    """A client flooding requests without reading replies must not wedge the
    listener for the next client once it goes away."""
    connect, th, t = server
    c = connect()
    c.noack()
    c.sock.setblocking(False)
    req = frame(f"m{t.addrs[0]:x},8000".encode()) * 200
    try:
        for _ in range(50):
            c.sock.send(req)
    except (BlockingIOError, OSError):
        pass
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    c.close()
    time.sleep(0.5)
    assert th.is_alive()
    _alive(connect)


# -- the gdb adapter when the server dies -------------------------------------------

pexpect = pytest.importorskip("pexpect")


def test_gdb_reports_killed_server_in_one_line(real_dump_factory):
    gdb = shutil.which("gdb")
    if not gdb:
        pytest.skip("gdb not installed")
    from test_gdb_plugin import Gdb
    d = real_dump_factory("vmcore-amd64-minidump")
    g = Gdb(gdb)
    try:
        out = g.cmd(f"kvm-open {d.kernel} {d.core}")
        assert "Traceback" not in out, out
        pid = g.server_pid()
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        for cmd in ("info threads", "kvm-ps", "x/wx &hz", "bt"):
            out = g.cmd(cmd, timeout=60)
            assert "Traceback" not in out, (cmd, out)
            lines = [ln for ln in out.splitlines() if ln.strip()]
            assert len(lines) <= 3, (cmd, out)
        out = g.cmd(f"kvm-open {d.kernel} {d.core}", timeout=120)
        assert "Traceback" not in out, out
        assert "(crashed)" in g.cmd("info threads")
    finally:
        try:
            g.quit()
        except Exception:  # noqa: BLE001
            g.p.terminate(force=True)
