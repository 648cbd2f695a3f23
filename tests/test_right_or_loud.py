"""Right or loud: the debuggers show the dump's truth or say why not (issue #11).

* The server runs on an interpreter that can run it, whatever ``python3`` comes
  first on PATH: gdb and lldb sessions (plugin loaded by hand, as a user's
  ~/.gdbinit or ~/.lldbinit does) with a venv lacking pyelftools first on PATH
  still show every thread and backtrace of the real dumps.
* When no interpreter can, kvm-open fails with one line naming it and the module.
* A kernel-state walk that raises (a bug) makes kvm-open fail with that error, not
  serve a made-up thread; a bug while answering a packet is printed, not hidden.
* A dump without threads is served as a labelled placeholder, with the reason
  printed at kvm-open and listed by kvm-info.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from realdumps import REAL_DUMPS, real_dump_factory  # noqa: F401 (fixture)
from test_gdb_plugin import _gdb_for
from test_lldb_plugin import _lldb

import kvm_dbg
from kvm_dbg.rsp import interpreter

ROOT = Path(__file__).resolve().parents[1]
GDB_PLUGIN = ROOT / "plugins" / "gdb" / "kvm_gdb.py"
LLDB_PLUGIN = ROOT / "plugins" / "lldb" / "kvm_lldb.py"
TIMEOUT = 300
FRAME = re.compile(r"^#(\d+)\s+(0x[0-9a-f]+)", re.M)

#: A sitecustomize that breaks the library where the test asks (KVM_DBG_TEST_BREAK):
#: "walk" makes the kernel-state process walk raise, "read" makes reads at
#: 0xdead0000 raise.  Both stand for bugs, not for bad data.
BREAKER = '''
import builtins, os, sys
_what = os.environ.get("KVM_DBG_TEST_BREAK", "")
_orig = builtins.__import__

def _walk(kvm):
    raise RuntimeError("injected walk failure")

def _patch():
    t = sys.modules.get("kvm_dbg.kstate.threads")
    if _what == "walk" and t is not None and getattr(t, "walk", _walk) is not _walk:
        t.walk = _walk
    k = sys.modules.get("kvm_dbg.kvm")
    if _what == "read" and k is not None and hasattr(k, "Kvm") \
            and not getattr(k.Kvm, "_broken", False):
        orig = k.Kvm.read_partial
        def read_partial(self, addr, size):
            if addr & ~0xFFFF == 0xdead0000:
                raise RuntimeError("injected read failure")
            return orig(self, addr, size)
        k.Kvm.read_partial = read_partial
        k.Kvm._broken = True

def _import(name, *args, **kwargs):
    mod = _orig(name, *args, **kwargs)
    if name.startswith(("kvm_dbg", ".")) or "kvm_dbg" in sys.modules:
        _patch()
    return mod

if _what:
    builtins.__import__ = _import
'''


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory) -> Path:
    """A venv whose python3 lacks pyelftools (and kvm_dbg), as users have first on PATH."""
    d = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(d)], check=True,
                   timeout=120)
    r = subprocess.run([str(d / "bin" / "python3"), "-c", "import elftools"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "elftools" in r.stderr
    return d


def _env(venv: Path, **extra: str) -> dict:
    env = dict(os.environ, TERM="dumb", PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    for k in ("KVM_DBG_PYTHON", "KVM_DBG_PATH", "VIRTUAL_ENV", "PYTHONPATH"):
        env.pop(k, None)
    env.update(extra)
    return env


def _gdb(exe: str, commands: list, env: dict) -> str:
    args = [exe, "-nx", "-batch", "-ex", "set pagination off", "-ex", "set osabi none",
            "-ex", f"source {GDB_PLUGIN}"]
    for c in commands:
        args += ["-ex", c]
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=TIMEOUT)
    return r.stdout + r.stderr


def _lldb_batch(commands: list, env: dict) -> str:
    args = [_lldb(), "--no-lldbinit", "--no-use-colors", "-b", "-o",
            f"command script import {LLDB_PLUGIN}"]
    for c in commands:
        args += ["-o", c]
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=TIMEOUT)
    return r.stdout + r.stderr


def _library_view(dump) -> tuple:
    with kvm_dbg.open(dump.kernel, dump.core) as kvm:
        threads = kvm.threads()
        return [t.name for t in threads], [t.backtrace() for t in threads]


# -- the interpreter that runs the server ---------------------------------------------

def test_probe_names_the_missing_module(bare_venv, monkeypatch):
    python = str(bare_venv / "bin" / "python3")
    monkeypatch.setenv("KVM_DBG_PYTHON", python)
    assert interpreter.candidates() == [python]
    with pytest.raises(interpreter.InterpreterError) as e:
        interpreter.choose()
    msg = str(e.value)
    assert python in msg and "No module named 'elftools'" in msg and "KVM_DBG_PYTHON" in msg
    assert "\n" not in msg


def test_candidates_skip_path_python(bare_venv, monkeypatch):
    """Inside a debugger sys.executable is PATH's python3; the choice never depends on it
    when the running interpreter itself can serve."""
    monkeypatch.delenv("KVM_DBG_PYTHON", raising=False)
    monkeypatch.setattr(sys, "executable", str(bare_venv / "bin" / "python3"))
    chosen = interpreter.choose()
    assert interpreter.probe(chosen, interpreter.server_pythonpath()) is None
    assert chosen != sys.executable


@pytest.mark.parametrize("name", REAL_DUMPS)
def test_gdb_with_bare_python_first_on_path(real_dump_factory, bare_venv, name):  # noqa: F811
    dump = real_dump_factory(name)
    names, backtraces = _library_view(dump)
    out = _gdb(_gdb_for(dump.arch), [f"kvm-open {dump.kernel} {dump.core}", "info threads",
                                     "thread apply all -ascending bt"], _env(bare_venv))
    assert "kvm-open:" not in out and "Traceback" not in out, out
    listing = out[out.index("  Id   Target Id"):]
    for n in names:
        assert f'"{n}"' in listing, (n, out)
    blocks = re.split(r"^Thread \d+ \(", out[out.index("\nThread 1 ("):], flags=re.M)[1:]
    got = [[int(pc, 16) for _, pc in FRAME.findall(b)] for b in blocks]
    # frame #0 of a thread whose pc has a symbol prints without its address
    want = [bt for bt in backtraces]
    assert len(got) == len(want) == dump.expected["numthread"], out
    for g, w in zip(got, want):
        assert g == w[len(w) - len(g):] and len(w) - len(g) <= 1, (name, g, w)


def test_lldb_with_bare_python_first_on_path(real_dump_factory, bare_venv):  # noqa: F811
    for name in REAL_DUMPS:
        dump = real_dump_factory(name)
        names, backtraces = _library_view(dump)
        out = _lldb_batch([f"kvm-open {dump.kernel} {dump.core}", "bt all", "kvm-close"],
                          _env(bare_venv))
        assert "error: kvm-open" not in out, out
        got, got_names = [], []
        for line in out[out.index("(lldb) bt all"):].splitlines():
            m = re.match(r"^[* ] thread #\d+, name = '(.*)'", line)
            if m:
                got.append([])
                got_names.append(m.group(1))
            m = re.match(r"^\s*\*?\s*frame #\d+: (0x[0-9a-f]+)", line)
            if m and got:
                got[-1].append(int(m.group(1), 16))
        assert got_names == names and got == backtraces, (name, out)


def test_no_usable_interpreter_is_one_line(real_dump_factory, bare_venv):  # noqa: F811
    """The failure message a user gets when the server cannot start."""
    dump = real_dump_factory("vmcore-amd64-minidump")
    python = str(bare_venv / "bin" / "python3")
    env = _env(bare_venv, KVM_DBG_PYTHON=python)
    want = (f"{dump.core}: cannot start the dump server: {python} (No module named "
            "'elftools'); install pyelftools for it")
    out = _gdb(_gdb_for("amd64"), [f"kvm-open {dump.kernel} {dump.core}", "info threads"], env)
    line = next(ln for ln in out.splitlines() if ln.startswith("kvm-open:"))
    assert line.startswith(f"kvm-open: {want}"), out
    assert "No threads." in out and "Traceback" not in out
    out = _lldb_batch([f"kvm-open {dump.kernel} {dump.core}", "thread list"], env)
    line = next(ln for ln in out.splitlines() if "kvm-open:" in ln)
    assert line.startswith(f"error: kvm-open: {want}"), out
    assert "thread #" not in out and "Traceback" not in out


# -- bugs are errors, bad data is a warning ---------------------------------------------

@pytest.fixture(scope="module")
def breaker(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("breaker")
    (d / "sitecustomize.py").write_text(BREAKER)
    return d


def test_walk_failure_is_an_error_not_a_thread(real_dump_factory, breaker):  # noqa: F811
    dump = real_dump_factory("vmcore-amd64-full")
    env = dict(os.environ, TERM="dumb", KVM_DBG_TEST_BREAK="walk", PYTHONPATH=str(breaker))
    want = "internal error: RuntimeError: injected walk failure"
    out = _gdb(_gdb_for("amd64"), [f"kvm-open {dump.kernel} {dump.core}", "info threads"], env)
    assert f"kvm-open: {dump.core}: {want}" in out, out
    assert "No threads." in out and "kernel" not in out.split("info threads")[-1]
    out = _lldb_batch([f"kvm-open {dump.kernel} {dump.core}", "thread list"], env)
    assert f"error: kvm-open: {dump.core}: {want}" in out, out
    assert "thread #" not in out


def test_packet_bug_is_printed_by_gdb(real_dump_factory, breaker):  # noqa: F811
    dump = real_dump_factory("vmcore-amd64-full")
    env = dict(os.environ, TERM="dumb", KVM_DBG_TEST_BREAK="read", PYTHONPATH=str(breaker))
    out = _gdb(_gdb_for("amd64"), [f"kvm-open {dump.kernel} {dump.core}",
                                   "x/gx 0xdead0010", "kvm-info"], env)
    assert "kvm_dbg: server internal error answering 'mdead0010,8': RuntimeError: " \
           "injected read failure" in out, out
    assert "server error: internal error answering 'mdead0010,8'" in out, out


def test_threadless_dump_is_labelled_with_its_reason(tmp_path):
    from fixturegen import build
    fx = build("amd64", "minidump", 3, str(tmp_path))
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kvm:
        assert kvm.threads() == []
        reason = kvm.warnings[0]
    assert reason.startswith("cannot enumerate threads")
    env = dict(os.environ, TERM="dumb")
    out = _gdb("gdb", [f"kvm-open {fx.kernel_path} {fx.core_path}", "info threads",
                       "kvm-info"], env)
    assert f"warning: {reason}" in out and out.count(f"warning: {reason}") == 2, out
    assert '"(no threads: kvm-info says why)"' in out
    assert "threads: none found in the dump (memory only)" in out
    out = _lldb_batch([f"kvm-open {fx.kernel_path} {fx.core_path}", "thread list", "kvm-info"],
                      env)
    assert out.count(f"warning: {reason}") == 2, out
    assert "name = '(no threads: kvm-info says why)'" in out


def test_cli_json_carries_warnings(tmp_path):
    import json

    from fixturegen import build
    fx = build("amd64", "minidump", 3, str(tmp_path))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for cmd in ("info", "threads", "ps", "dmesg", "kld", "triage"):
        r = subprocess.run([sys.executable, "-m", "kvm_dbg.cli", cmd, "--json", fx.kernel_path,
                            fx.core_path], capture_output=True, text=True, env=env, timeout=120)
        doc = json.loads(r.stdout)
        assert any(w.startswith("cannot enumerate threads") for w in doc["warnings"]) or \
            cmd in ("info", "dmesg", "kld"), (cmd, doc)
        assert isinstance(doc["warnings"], list)
    r = subprocess.run([sys.executable, "-m", "kvm_dbg.cli", "threads", fx.kernel_path,
                        fx.core_path], capture_output=True, text=True, env=env, timeout=120)
    assert "warning: cannot enumerate threads" in r.stderr
