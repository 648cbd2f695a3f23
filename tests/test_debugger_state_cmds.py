"""kvm-dmesg, kvm-ps, kvm-kld, kvm-info and the open banner in real gdb and lldb,
on the bundled example (wrapped message buffer, 7 processes, 2 modules, panic)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kvm_dbg.debuggers import debugger_env, lldb_binary

ROOT = Path(__file__).resolve().parents[1]
GDB_PLUGIN = ROOT / "plugins" / "gdb" / "kvm_gdb.py"
LLDB_PLUGIN = ROOT / "plugins" / "lldb" / "kvm_lldb.py"
COMMANDS = ["kvm-info", "kvm-ps", "kvm-dmesg", "kvm-kld"]


def _check(out: str) -> None:
    assert "Traceback" not in out, out
    # the open banner: unread message buffer, then the panic string
    assert "Unread portion of the kernel message buffer" in out, out
    assert "panic: page fault" in out
    assert "Fatal trap 12: page fault while in kernel mode" in out       # kvm-dmesg / banner
    assert "crashbox.example.org" in out or "FreeBSD 14" in out           # kvm-info
    ps = [ln.split() for ln in out.splitlines() if ln.strip().endswith(("sysctl", "sshd"))]
    rows = {r[-1]: r for r in ps if len(r) >= 6 and r[0].isdigit()}
    assert rows["sysctl"][0] == "812" and rows["sysctl"][1] == "705", rows   # pid, ppid
    assert "zfs.ko" in out and "linux64.ko" in out                        # kvm-kld


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")
def test_gdb_state_commands_on_example(example):
    args = ["gdb", "-batch", "-nx", "-ex", "set pagination off", "-ex", f"source {GDB_PLUGIN}",
            "-ex", f"kvm-open {example / 'kernel'} {example / 'vmcore.0'}"]
    for c in COMMANDS:
        args += ["-ex", c]
    r = subprocess.run(args, capture_output=True, text=True, timeout=180, env=debugger_env())
    _check(r.stdout + r.stderr)


def test_lldb_state_commands_on_example(example):
    try:
        exe = lldb_binary()
    except Exception:
        pytest.skip("lldb not installed")
    args = [exe, "-b", "--no-lldbinit", "--no-use-colors", "-o",
            f"command script import {LLDB_PLUGIN}",
            "-o", f"kvm-open {example / 'kernel'} {example / 'vmcore.0'}"]
    for c in COMMANDS:
        args += ["-o", c]
    r = subprocess.run(args, capture_output=True, text=True, timeout=180, env=debugger_env())
    _check(r.stdout + r.stderr)
