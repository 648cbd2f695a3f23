"""The gdb adapter driven through a real gdb (pexpect) on the four real dumps."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from procs import gone
from realdumps import REAL_DUMPS, real_dump_factory  # noqa: F401 (fixture)

from kvm_dbg.adapter import OPEN_USAGE

pexpect = pytest.importorskip("pexpect")

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "gdb" / "kvm_gdb.py"
PROMPT = r"\(gdb\) "
GDB_REG = {"fp": "x29", "lr": "x30"}


def _gdb_for(arch: str) -> str:
    if arch in ("amd64", "i386"):
        return shutil.which("gdb") or ""
    return shutil.which("gdb-multiarch") or ""


class Gdb:
    """An interactive gdb with the plugin sourced."""

    def __init__(self, exe: str) -> None:
        env = dict(os.environ, TERM="dumb")
        self.p = pexpect.spawn(exe, ["-nx", "-q"], env=env, encoding="utf-8",
                               timeout=120, echo=False, dimensions=(200, 400))
        self.p.expect(PROMPT)
        for c in ("set pagination off", "set width 0", "set height 0", "set confirm off",
                  f"source {PLUGIN}"):
            self.cmd(c)

    def cmd(self, line: str, timeout: float = 120) -> str:
        self.p.sendline(line)
        self.p.expect(PROMPT, timeout=timeout)
        return self.p.before.replace("\r", "")

    def server_pid(self) -> int:
        out = self.cmd("python print(kvm_gdb._state['server'].proc.pid)")
        return int(out.strip().splitlines()[-1])

    def quit(self) -> None:
        self.p.sendline("quit")
        self.p.expect(pexpect.EOF, timeout=30)


@pytest.fixture
def gdb_dump(real_dump_factory, request):  # noqa: F811
    dump = real_dump_factory(request.param)
    exe = _gdb_for(dump.arch)
    if not exe:
        pytest.skip(f"no gdb able to debug {dump.arch}")
    g = Gdb(exe)
    yield g, dump
    try:
        g.quit()
    except Exception:
        g.p.terminate(force=True)


@pytest.mark.parametrize("gdb_dump", REAL_DUMPS, indirect=True)
def test_kvm_open_real_dump(gdb_dump):
    g, dump = gdb_dump
    exp = dump.expected
    out = g.cmd(f"kvm-open {dump.kernel} {dump.core}")
    assert "Traceback" not in out and "kvm-open:" not in out, out
    assert re.search(r"#0\s+0x[0-9a-f]+", out), out
    threads = g.cmd("info threads")
    lines = [ln for ln in threads.splitlines() if re.match(r"^[* ]\s*\d+\s+Thread", ln)]
    assert len(lines) == exp["numthread"], threads
    for pos, t in exp["threads"].items():
        line = lines[int(pos)]
        assert f'"{t["name"]}"' in line, (t["name"], line)
    assert lines[0].startswith("*")  # the crashed thread is selected
    for pos, t in exp["threads"].items():
        g.cmd(f"thread {int(pos) + 1}")
        names = [GDB_REG.get(n, n) for n in t["registers"]]
        regs = g.cmd("info registers " + " ".join(names))
        for name, value in t["registers"].items():
            m = re.search(rf"^{GDB_REG.get(name, name)}\s+(0x[0-9a-f]+)", regs, re.M)
            assert m and int(m.group(1), 16) == int(value, 16), (name, value, regs)
    g.cmd("thread 1")
    assert g.cmd("print (int)hz").strip().endswith(f"= {exp['hz']}")
    assert re.search(rf"<hz>:\s+0x0*{exp['hz']:x}\b", g.cmd("x/wx &hz"))
    assert "Cannot access memory at address 0x0" in g.cmd("x/wx 0")
    pid = g.server_pid()
    out = g.cmd("kvm-close")
    assert "Traceback" not in out
    assert gone(pid, 5.0), "server still running after kvm-close"
    assert "No threads" in g.cmd("info threads")


@pytest.mark.parametrize("gdb_dump", ["vmcore-amd64-minidump"], indirect=True)
def test_commands_and_errors(gdb_dump, tmp_path):
    g, dump = gdb_dump
    # errors before anything is open: one line each, no traceback
    out = g.cmd("kvm-open /nonexistent/kernel /nonexistent/core")
    assert out.strip() == "kvm-open: /nonexistent/kernel: No such file or directory"
    assert g.cmd("kvm-ps").strip().startswith("kvm-ps: no dump is open")
    assert g.cmd("kvm-open a b c").strip() == "kvm-open: " + OPEN_USAGE
    bogus = tmp_path / "not-a-core"
    bogus.write_bytes(b"\0" * 8192)
    out = g.cmd(f"kvm-open {dump.kernel} {bogus}")
    assert out.strip().startswith(f"kvm-open: {bogus}:"), out
    assert len(out.strip().splitlines()) == 1 and "Traceback" not in out
    # now a real one; KERNEL from 'file'
    g.cmd(f"file {dump.kernel}")
    out = g.cmd(f"kvm-open {dump.core}")
    assert "kvm-open:" not in out, out
    again = g.cmd(f"kvm-open {dump.kernel} {dump.core}").strip()
    assert again.startswith(f"kvm-open: {dump.core}: a dump is already open")
    assert "\n" not in again
    assert "sysctl" in g.cmd("kvm-ps")
    assert "architecture: amd64" in g.cmd("kvm-info")
    assert "Traceback" not in g.cmd("kvm-dmesg")
    assert "Traceback" not in g.cmd("kvm-kld")
    assert g.cmd("kvm-ps extra").strip() == "kvm-ps: this command takes no arguments"
    out = g.cmd("kvm-proc 28")
    assert "Switching to thread 2" in out, out
    assert g.cmd("kvm-tid 1").strip() == "kvm-tid: invalid tid"
    assert g.cmd("kvm-proc 99999").strip() == "kvm-proc: invalid pid"
    assert g.cmd("kvm-tid").strip() == "kvm-tid: usage: kvm-tid TID|THREAD-ADDRESS"
    assert "<unavailable>" in g.cmd("info registers rcx")
    assert "Cannot access memory" in g.cmd("set var *(int *)&hz = 5")
    assert "= 100" in g.cmd("print (int)hz")
    hz = "int(gdb.parse_and_eval('(unsigned long)&hz'))"
    out = g.cmd(f"python print(kvm_gdb.kvm().read({hz}, 4))")
    assert "b'd\\x00\\x00\\x00'" in out, out
    assert "Thread" in g.cmd("stepi")  # refused cleanly, no endless loop
    # detach and reconnect to the same server
    g.cmd("detach")
    addr = g.cmd("python print(kvm_gdb._state['server'].address)").strip().splitlines()[-1]
    out = g.cmd(f"target remote {addr}")
    assert "sysctl" in g.cmd("info threads")
    pid = g.server_pid()
    g.quit()
    assert gone(pid, 5.0), "server still running after gdb exited"
