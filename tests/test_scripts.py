"""The documented debugger scripts (examples/scripts/), run as separate processes
the way docs/lldb.md and docs/gdb.md say: the lldb SB API program on the Python
that ``kvm-dbg env --lldb`` names, the gdb script in ``gdb -batch``.

Checked on the real amd64 and arm64 dumps against expected.json (thread count,
names, every frame's pc, hz), and on the bundled amd64 and arm64 examples
(kernels with function symbols) against the library's symbolized backtrace of
the crashed thread.  The docs embed the example files verbatim (checked here).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from realdumps import real_dump_factory  # noqa: F401 (fixture)

import kvm_dbg
from kvm_dbg import report

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "examples" / "scripts"
LLDB_SCRIPT = SCRIPTS / "lldb_threads.py"
GDB_SCRIPT = SCRIPTS / "gdb_threads.py"
GDB_PLUGIN = ROOT / "plugins" / "gdb" / "kvm_gdb.py"
TIMEOUT = 300

THREAD = re.compile(r"^thread (\d+) tid (\d+) name '(.*)'$")
FRAME = re.compile(r"^  #(\d+)\s+(0x[0-9a-f]+)  (\S+)$")
GLOBAL = re.compile(r"^(\w+) = (-?\d+)$")


def parse(out: str) -> Dict:
    """The scripts' output: {"count": N, "threads": [(tid, name, [(pc, symbol)])], "globals"}."""
    lines = out.splitlines()
    m = re.match(r"^(\d+) threads$", lines[0])
    assert m, out[:2000]
    doc: Dict = {"count": int(m.group(1)), "threads": [], "globals": {}}
    for line in lines[1:]:
        t, f, g = THREAD.match(line), FRAME.match(line), GLOBAL.match(line)
        if t:
            doc["threads"].append((int(t.group(2)), t.group(3), []))
        elif f:
            assert int(f.group(1)) == len(doc["threads"][-1][2]), line
            doc["threads"][-1][2].append((int(f.group(2), 16), f.group(3)))
        elif g:
            doc["globals"][g.group(1)] = int(g.group(2))
        else:
            raise AssertionError(f"unexpected line {line!r} in\n{out[:3000]}")
    return doc


@pytest.fixture(scope="module")
def lldb_env() -> Dict[str, str]:
    """The environment ``eval "$(kvm-dbg env --lldb)"`` gives, as docs/lldb.md runs it."""
    if not (shutil.which("lldb-16") or shutil.which("lldb")):
        pytest.fail("lldb is not installed (bootstrap installs lldb-16 and liblldb-16-dev)")
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}
    cmd = (f'eval "$(PYTHONPATH={ROOT} {sys.executable} -m kvm_dbg.cli env --lldb)" && '
           'printf "%s\\n%s\\n" "$PYTHON" "$PYTHONPATH"')
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=base)
    assert r.returncode == 0, r.stderr
    python, path = r.stdout.splitlines()
    return dict(base, PYTHON=python, PYTHONPATH=path)


def run_lldb(env: Dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([env["PYTHON"], str(LLDB_SCRIPT), *args], capture_output=True,
                          text=True, env=env, timeout=TIMEOUT, cwd=str(ROOT))


def _gdb(arch: str) -> str:
    exe = shutil.which("gdb") if arch in ("amd64", "i386") else shutil.which("gdb-multiarch")
    if not exe:
        pytest.fail(f"no gdb for {arch} (bootstrap installs gdb and gdb-multiarch)")
    return exe


def run_gdb(arch: str, *args: str) -> subprocess.CompletedProcess:
    words = " ".join(f'"{a}"' for a in args)
    env = {"PATH": "/usr/bin:" + os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}
    return subprocess.run([_gdb(arch), "-nx", "-batch", "-x", str(GDB_PLUGIN), "-x",
                           str(GDB_SCRIPT), "-ex", f"dump-threads {words}"],
                          capture_output=True, text=True, env=env, timeout=TIMEOUT,
                          cwd=str(ROOT), stdin=subprocess.DEVNULL)


def _check_expected(doc: Dict, exp: Dict) -> None:
    assert doc["count"] == exp["numthread"] == len(doc["threads"])
    for pos, t in exp["threads"].items():
        _tid, name, frames = doc["threads"][int(pos)]
        assert name == t["name"]
        assert [pc for pc, _sym in frames] == [int(pc, 16) for pc in t["backtrace_pcs"]], \
            (pos, [hex(pc) for pc, _ in frames])
    assert doc["globals"] == {"hz": exp["hz"]}


@pytest.mark.parametrize("name", ["vmcore-amd64-minidump", "vmcore-arm64-minidump"])
def test_lldb_script_real_dump(real_dump_factory, lldb_env, name):  # noqa: F811
    dump = real_dump_factory(name)
    r = run_lldb(lldb_env, dump.kernel, dump.core)
    assert r.returncode == 0, r.stderr
    _check_expected(parse(r.stdout), dump.expected)
    assert "Traceback" not in r.stderr and "Process 1 stopped" in r.stderr  # kvm-open's text


@pytest.mark.parametrize("name", ["vmcore-amd64-minidump", "vmcore-arm64-minidump"])
def test_gdb_script_real_dump(real_dump_factory, name):  # noqa: F811
    dump = real_dump_factory(name)
    r = run_gdb(dump.arch, dump.kernel, dump.core)
    assert r.returncode == 0, r.stderr
    _check_expected(parse(r.stdout), dump.expected)
    assert "Traceback" not in r.stderr and "Python Exception" not in r.stderr, r.stderr


def test_script_errors_are_the_command_line(lldb_env, tmp_path, real_dump_factory):  # noqa: F811
    dump = real_dump_factory("vmcore-amd64-minidump")
    missing = str(tmp_path / "vmcore.9")
    r = run_lldb(lldb_env, dump.kernel, missing)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.splitlines() == [f"error: kvm-open: {missing}: No such file or directory"]
    r = run_gdb("amd64", dump.kernel, missing)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines()[-1] == \
        f"kvm-open: {missing}: No such file or directory", r.stderr
    assert "Traceback" not in r.stderr and "Python Exception" not in r.stderr


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Dict[str, Tuple[str, str]]:
    """{arch: (kernel, core)} of the bundled amd64 and arm64 examples, decompressed."""
    out = {}
    for arch, src in (("amd64", ROOT / "examples"), ("arm64", ROOT / "examples" / "arm64")):
        d = tmp_path_factory.mktemp(f"example-{arch}")
        for name in ("kernel", "vmcore.0"):
            with gzip.open(src / f"{name}.gz") as f, open(d / name, "wb") as g:
                shutil.copyfileobj(f, g)
        out[arch] = (str(d / "kernel"), str(d / "vmcore.0"))
    return out


def _library_view(kernel: str, core: str) -> Tuple[int, List[Tuple[int, str]], int]:
    """(thread count, crashed thread's [(pc, name+0xoff)], hz) from the library."""
    with kvm_dbg.open(kernel, core) as kd:
        threads = kd.threads()
        crashed = next(t for t in threads if t.crashed)
        frames = [(pc, report.symbolize(kd, pc)) for pc in crashed.backtrace()]
        return len(threads), frames, kd.read_int(kd.symbol("hz"), 4, signed=True)


@pytest.mark.parametrize("debugger", ["lldb", "gdb"])
@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_scripts_symbols_on_examples(examples, lldb_env, debugger, arch):
    """Kernels with function symbols: each frame's symbol is the library's
    (a different symbolizer: the debugger's own symbol tables)."""
    kernel, core = examples[arch]
    r = run_lldb(lldb_env, kernel, core) if debugger == "lldb" else run_gdb(arch, kernel, core)
    assert r.returncode == 0, r.stderr
    doc = parse(r.stdout)
    count, frames, hz = _library_view(kernel, core)
    assert doc["count"] == count and doc["globals"] == {"hz": hz}
    assert doc["threads"][0][2] == frames, (doc["threads"][0][2], frames)
    assert any(sym.startswith("strlen+") for _pc, sym in frames)     # the faulting function


@pytest.mark.parametrize("doc,script", [("lldb.md", LLDB_SCRIPT), ("gdb.md", GDB_SCRIPT)])
def test_docs_embed_the_tested_scripts(doc, script):
    text = (ROOT / "docs" / doc).read_text()
    section = text.split("\n## Scripts\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert script.read_text() in blocks, f"docs/{doc} must show {script.name} verbatim"


# -- the API itself: options, messages, registers, errors ---------------------------

LLDB_API = r'''
import io, json, sys
import lldb
from kvm_dbg.scripting import ScriptError, lldb_plugin
kernel, core, sysroot = sys.argv[1:4]
debugger = lldb.SBDebugger.Create()
debugger.SetAsync(False)
kvm_lldb = lldb_plugin(debugger)
out = {}
try:
    kvm_lldb.open_dump(debugger, kernel, core, sysrot=sysroot)
except TypeError as e:
    out["typeerror"] = str(e)
messages = io.StringIO()
process = kvm_lldb.open_dump(debugger, kernel, core, out=messages, sysroot=sysroot or None)
out["type"] = type(process).__name__
out["messages"] = messages.getvalue()
out["nthreads"] = process.GetNumThreads()
frame = process.GetSelectedThread().GetFrameAtIndex(0)
out["regs"] = {r.GetName(): r.GetValue() for regs in frame.GetRegisters() for r in regs}
out["kvm_threads"] = len(kvm_lldb.kvm().threads())
try:
    kvm_lldb.open_dump(debugger, kernel, core, out=messages)
except ScriptError as e:
    out["again"] = str(e)
kvm_lldb.close_dump(debugger, out=messages)
try:
    kvm_lldb.close_dump(debugger)
except ScriptError as e:
    out["closed"] = str(e)
print(json.dumps(out))
'''

GDB_API = r'''
import io, json
import gdb
import kvm_gdb
from kvm_dbg.scripting import ScriptError
kernel, core, sysroot, regs = ARGS
out = {}
try:
    kvm_gdb.open_dump(kernel, core, sysrot=sysroot)
except TypeError as e:
    out["typeerror"] = str(e)
messages = io.StringIO()
inferior = kvm_gdb.open_dump(kernel, core, out=messages, sysroot=sysroot or None)
out["same"] = inferior == gdb.selected_inferior() and inferior.pid != 0
out["messages"] = messages.getvalue()
out["nthreads"] = len(inferior.threads())
frame = gdb.selected_frame()
out["regs"] = {r: "0x%016x" % (int(frame.read_register(r)) & (2**64 - 1)) for r in regs}
out["kvm_threads"] = len(kvm_gdb.kvm().threads())
try:
    kvm_gdb.open_dump(kernel, core, out=messages)
except ScriptError as e:
    out["again"] = str(e)
kvm_gdb.close_dump(out=messages)
try:
    kvm_gdb.close_dump()
except ScriptError as e:
    out["closed"] = str(e)
print("JSON " + json.dumps(out))
'''


def _api_lldb(env, tmp_path, kernel, core, sysroot=""):
    prog = tmp_path / "api_lldb.py"
    prog.write_text(LLDB_API)
    r = subprocess.run([env["PYTHON"], str(prog), kernel, core, sysroot], capture_output=True,
                       text=True, env=env, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def _api_gdb(tmp_path, arch, kernel, core, sysroot="", regs=()):
    prog = tmp_path / "api_gdb.py"
    prog.write_text(f"ARGS = {[kernel, core, sysroot, list(regs)]!r}\n" + GDB_API)
    env = {"PATH": "/usr/bin:" + os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}
    r = subprocess.run([_gdb(arch), "-nx", "-batch", "-x", str(GDB_PLUGIN), "-x", str(prog)],
                       capture_output=True, text=True, env=env, timeout=TIMEOUT,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("JSON ")]
    assert len(line) == 1 and r.stdout.strip() == line[0], r.stdout   # nothing else on stdout
    return json.loads(line[0][5:])


def _check_api(doc, core, nthreads):
    assert doc["typeerror"].startswith("open_dump() got an unexpected keyword argument 'sysrot'")
    assert doc["nthreads"] == doc["kvm_threads"] == nthreads
    assert doc["again"] == f"kvm-open: {core}: a dump is already open ({core}); " \
        "kvm-close first", doc["again"]
    assert doc["closed"] == "kvm-close: no dump is open"


@pytest.mark.parametrize("debugger", ["lldb", "gdb"])
def test_open_dump_api_registers(real_dump_factory, lldb_env, tmp_path, debugger):  # noqa: F811
    """The returned process/inferior is the dump: the crashed thread's registers."""
    dump = real_dump_factory("vmcore-amd64-minidump")
    want = dump.expected["threads"]["0"]["registers"]
    if debugger == "lldb":
        doc = _api_lldb(lldb_env, tmp_path, dump.kernel, dump.core)
        assert doc["type"] == "SBProcess"
    else:
        doc = _api_gdb(tmp_path, "amd64", dump.kernel, dump.core, regs=sorted(want))
        assert doc["same"] is True
    _check_api(doc, dump.core, dump.expected["numthread"])
    assert {r: int(doc["regs"][r], 16) for r in want} == {r: int(v, 16) for r, v in want.items()}
    stop = "* thread #1, name = '(pid 800) sysctl (crashed)', stop reason = signal SIGTRAP" \
        if debugger == "lldb" else "#0  0xffffffff80c09ade in ?? ()"
    assert stop in doc["messages"].splitlines(), doc["messages"]


@pytest.mark.parametrize("debugger", ["lldb", "gdb"])
def test_open_dump_api_sysroot_modules(lldb_env, tmp_path, debugger):
    """Options reach kvm-open: --sysroot finds a module in its /usr/lib/debug mirror,
    and what kvm-open prints lands in ``out``."""
    from fixturegen import build
    from fixturegen.kernelstate import default_spec
    from test_kld_layout import MODULES, write_ko
    fx = build("amd64", "minidump", 3, str(tmp_path / "k"),
               kstate=default_spec("amd64", klds=MODULES))
    root = tmp_path / "root"
    (root / "usr/lib/debug/boot/modules").mkdir(parents=True)
    ko = write_ko(root / "usr/lib/debug/boot/modules/kvmtest.ko.debug")
    base = {k.name: k.address for k in fx.manifest.kstate.klds}["kvmtest.ko"]
    if debugger == "lldb":
        doc = _api_lldb(lldb_env, tmp_path, fx.kernel_path, fx.core_path, str(root))
    else:
        doc = _api_gdb(tmp_path, "amd64", fx.kernel_path, fx.core_path, str(root))
    _check_api(doc, fx.core_path, len(fx.manifest.kstate.threads))
    assert f"Loaded symbols for kvmtest.ko at 0x{base:x} from {ko}\n" in doc["messages"]
    assert doc["messages"].count("warning: klds: absent.ko: no symbol file found") == 1
    assert "panic: page fault" in doc["messages"]
