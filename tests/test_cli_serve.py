"""``kvm-dbg serve``: the RSP server for any client, loopback by default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_rsp_protocol import Client

ROOT = Path(__file__).resolve().parents[1]


def test_serve_answers_an_rsp_client(real_dumps):
    d = real_dumps["i386-minidump"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "kvm_dbg.cli", "serve", d.kernel, d.core],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stdout.readline()
        assert "listening on 127.0.0.1:" in line, (line, p.stderr.read() if p.poll() else "")
        c = Client(line.split("listening on ", 1)[1].strip())
        c.send(b"qSupported:swbreak+")
        c.noack()
        hz = int(subprocess.run([sys.executable, "-m", "kvm_dbg.cli", "nlist", d.kernel, d.core,
                                 "hz"], capture_output=True, text=True, env=env,
                                check=True).stdout.split()[1], 16)
        reply = c.send(b"m%x,4" % hz)
        assert int.from_bytes(bytes.fromhex(reply.decode()), "little") == d.expected["hz"]
        assert c.send(b"qfThreadInfo").startswith(b"m")
        assert c.send(b"M%x,4:00000000" % hz).startswith(b"E")      # read-only
        c.send(b"D")
        c.close()
    finally:
        p.terminate()
        p.wait(30)


def test_serve_bad_core_exits_1_with_one_line(real_dumps, tmp_path):
    d = real_dumps["i386-minidump"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "kvm_dbg.cli", "serve", d.kernel,
                        str(tmp_path / "nope")], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "nope" in r.stderr, r.stderr
