"""kvm-crashinfo in real gdb and lldb prints the report ``kvm-dbg crashinfo`` prints.

The report is made in the plugin's server process (monitor/qKvm command
``crashinfo``), so the drgn sections need drgn in the server's interpreter: the
first tests point ``KVM_DBG_PYTHON`` at this interpreter (the test extra has drgn),
the last one at an interpreter without drgn, where those sections say so."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kvm_dbg.debuggers import debugger_env, lldb_binary

ROOT = Path(__file__).resolve().parents[1]
GDB_PLUGIN = ROOT / "plugins" / "gdb" / "kvm_gdb.py"
LLDB_PLUGIN = ROOT / "plugins" / "lldb" / "kvm_lldb.py"
BEGIN, END = "@@BEGIN-CRASHINFO@@", "@@END-CRASHINFO@@"


def _no_date(text: str) -> str:
    return re.sub(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d UTC \d{4}$", "DATE", text, count=1,
                  flags=re.M)


def _cli_report(kernel: Path, core: Path) -> str:
    p = subprocess.run([sys.executable, "-m", "kvm_dbg.cli", "crashinfo", str(kernel),
                        str(core)], capture_output=True, text=True, timeout=300, check=True)
    return p.stdout


def _gdb(kernel: Path, core: Path, python: str) -> str:
    args = ["gdb", "-batch", "-nx", "-ex", "set pagination off", "-ex", "set width 0",
            "-ex", f"source {GDB_PLUGIN}", "-ex", f"kvm-open {kernel} {core}",
            "-ex", f"echo {BEGIN}\\n", "-ex", "kvm-crashinfo", "-ex", f"echo {END}\\n"]
    env = debugger_env(dict(os.environ, KVM_DBG_PYTHON=python))
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    return out


def _lldb(kernel: Path, core: Path, python: str) -> str:
    args = [lldb_binary(), "-b", "--no-lldbinit", "--no-use-colors", "-o",
            f"command script import {LLDB_PLUGIN}", "-o", f"kvm-open {kernel} {core}",
            "-o", f"script print('{BEGIN}')", "-o", "kvm-crashinfo",
            "-o", f"script print('{END}')"]
    env = debugger_env(dict(os.environ, KVM_DBG_PYTHON=python))
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    return out


def _report_lines(out: str) -> str:
    """The report as the debugger printed it (its command echo dropped)."""
    body = out.split(BEGIN, 1)[1].split(END, 1)[0]
    lines = [ln for ln in body.split("\n") if not ln.startswith("(lldb) ")]
    start = next(i for i, ln in enumerate(lines) if " dumped core - see " in ln)
    end = max(i for i, ln in enumerate(lines) if ln.strip()) + 1
    return "\n".join(lines[start:end]).rstrip() + "\n"


@pytest.mark.parametrize("debugger", ["gdb", "lldb"])
def test_kvm_crashinfo_prints_the_cli_report(example, debugger):
    kernel, core = example / "kernel", example / "vmcore.0"
    run = _gdb if debugger == "gdb" else _lldb
    got = _report_lines(run(kernel, core, sys.executable))
    want = _cli_report(kernel, core)
    assert "vmstat -z\n\nITEM" in want and "not available: needs drgn" not in want
    assert _no_date(got) == _no_date(want).rstrip() + "\n"


def test_kvm_crashinfo_without_drgn_in_the_server(example):
    """The server on Debian's python3 (no drgn 0.3.0 there): kstate sections, and
    the drgn sections name the interpreter and KVM_DBG_PYTHON."""
    system = "/usr/bin/python3"
    probe = subprocess.run([system, "-c", "import drgn"], capture_output=True)
    assert probe.returncode != 0, "this test needs a python3 without drgn"
    out = _report_lines(_gdb(example / "kernel", example / "vmcore.0", system))
    assert "Tracing command sysctl pid 812 tid 100120 (CPU 1)" in out
    assert re.search(r"^\s+812\s+705\s+PRS_NORMAL", out, re.M)
    body = out.split("\nvmstat -m\n", 1)[1].split("\n---", 1)[0]
    assert "not available: needs drgn: drgn is not installed for /usr/bin/python3" in body
    assert "set KVM_DBG_PYTHON to a Python with kvm-dbg[drgn]" in body
