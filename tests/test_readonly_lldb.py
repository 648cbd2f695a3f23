"""Read-only guarantee for an lldb session, and ``kvm-dbg lldb`` reaching a prompt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_robust_readonly import _digest, pair  # noqa: F401 (module fixture)

from kvm_dbg.debuggers import debugger_env, lldb_binary

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "lldb" / "kvm_lldb.py"


def _lldb():
    try:
        return lldb_binary()
    except Exception:
        return None


@pytest.mark.skipif(_lldb() is None, reason="lldb not installed")
def test_lldb_session_changes_nothing(pair):  # noqa: F811
    kernel, core = pair
    before = (_digest(kernel), _digest(core))
    r = subprocess.run([_lldb(), "-b", "--no-lldbinit", "--no-use-colors",
                        "-o", f"command script import {PLUGIN}", "-o", f"kvm-open {kernel} {core}",
                        "-o", "thread list", "-o", "bt", "-o", "memory read -c 16 &hz",
                        "-o", "memory write &hz 1", "-o", "kvm-ps", "-o", "kvm-close"],
                       capture_output=True, text=True, timeout=180, env=debugger_env())
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "sysctl (crashed)" in out, out
    assert (_digest(kernel), _digest(core)) == before


@pytest.mark.skipif(_lldb() is None, reason="lldb not installed")
def test_kvm_dbg_lldb_reaches_prompt_with_crashed_thread(pair):  # noqa: F811
    pexpect = pytest.importorskip("pexpect")
    kernel, core = pair
    env = dict(os.environ, PYTHONPATH=str(ROOT), TERM="dumb")
    child = pexpect.spawn(sys.executable, ["-m", "kvm_dbg.cli", "lldb", kernel, core, "--",
                                           "--no-lldbinit"],
                          env=env, encoding="utf-8", timeout=90, dimensions=(200, 250))
    try:
        child.expect(r"\(lldb\) ")
        child.sendline("thread list")
        child.expect(r"\* thread #1: tid = 100670.*name = '\(pid 800\) sysctl \(crashed\)'")
        child.expect(r"\(lldb\) ")
        child.sendline("quit")
        if child.expect([pexpect.EOF, r"\[Y/n\]"]) == 1:
            child.sendline("y")
            child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
