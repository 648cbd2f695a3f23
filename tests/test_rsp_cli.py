"""``python -m kvm_dbg.rsp``: the command line, its transports and its error line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from realdumps import real_dump_factory  # noqa: F401 (fixture)
from test_rsp_protocol import Client

from kvm_dbg.rsp import READY_PREFIX
from kvm_dbg.rsp.launch import LaunchError, spawn

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _start(args):
    p = subprocess.Popen([sys.executable, "-m", "kvm_dbg.rsp", *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True)
    line = p.stdout.readline()
    assert line.startswith(READY_PREFIX), (line, p.stderr.read() if p.poll() else "")
    return p, line[len(READY_PREFIX):].strip()


def test_bad_core_is_one_line(tmp_path, real_dump_factory):  # noqa: F811
    dump = real_dump_factory("vmcore-amd64-minidump")
    bogus = tmp_path / "bogus"
    bogus.write_bytes(b"\0" * 4096)
    r = subprocess.run([sys.executable, "-m", "kvm_dbg.rsp", dump.kernel, str(bogus)],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 1
    assert r.stderr.startswith("kvm_dbg.rsp: error: ") and r.stderr.count("\n") == 1
    assert r.stdout == ""


def test_tcp_listen_and_reconnect(real_dump_factory):  # noqa: F811
    dump = real_dump_factory("vmcore-amd64-full")
    p, addr = _start([dump.kernel, dump.core, "--listen", "127.0.0.1:0"])
    try:
        assert addr.startswith("127.0.0.1:")
        for _ in range(2):
            c = Client(addr)
            assert c.send(b"?").startswith(b"T05thread:")
            xml = c.send(b"qXfer:threads:read::0,4000")
            assert b'name="(pid 806) sysctl (crashed)"' in xml
            assert c.send(b"D") == b"OK"
            c.close()
    finally:
        p.terminate()
        p.wait(10)


def test_unix_socket_and_watch_stdin(tmp_path, real_dump_factory):  # noqa: F811
    dump = real_dump_factory("vmcore-i386-minidump")
    sock = tmp_path / "s"
    p, addr = _start([dump.kernel, dump.core, "--unix", str(sock), "--watch-stdin"])
    assert addr == str(sock)
    import socket as _socket
    s = _socket.socket(_socket.AF_UNIX)
    s.connect(addr)
    s.sendall(b"$?#3f")
    assert s.recv(100).startswith(b"+$T05thread:")
    s.close()
    p.stdin.close()  # the parent went away: the server exits
    assert p.wait(10) == 0
    assert not sock.exists()


def test_spawn_helper(real_dump_factory, tmp_path):  # noqa: F811
    dump = real_dump_factory("vmcore-amd64-minidump")
    with pytest.raises(LaunchError) as e:
        spawn(dump.kernel, str(tmp_path / "missing"))
    assert "missing" in str(e.value)
    server = spawn(dump.kernel, dump.core, {"hz": None})
    try:
        assert server.alive and os.path.exists(server.address)
    finally:
        server.close()
    assert not server.alive and not os.path.exists(server.workdir)


@pytest.mark.skipif(not shutil.which("gdb"), reason="gdb not installed")
def test_gdb_pipe_transport(real_dump_factory):  # noqa: F811
    dump = real_dump_factory("vmcore-amd64-minidump")
    cmd = f"exec {sys.executable} -m kvm_dbg.rsp {dump.kernel} {dump.core} --stdio"
    r = subprocess.run(["gdb", "-nx", "--batch", "-ex", "set osabi none",
                        "-ex", f"file {dump.kernel}", "-ex", f"target remote | {cmd}",
                        "-ex", "info threads", "-ex", "print (int)hz", "-ex", "kill"],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert '"(pid 800) sysctl (crashed)"' in r.stdout, r.stdout + r.stderr
    assert "$1 = 100" in r.stdout
