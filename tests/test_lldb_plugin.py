"""The lldb adapter driven through a real lldb-16 (pexpect) on the four real dumps."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from procs import gone
from realdumps import REAL_DUMPS, real_dump_factory  # noqa: F401 (fixture)

from kvm_dbg.adapter import OPEN_USAGE
from kvm_dbg.debuggers import debugger_env

pexpect = pytest.importorskip("pexpect")

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "lldb" / "kvm_lldb.py"
DOC = ROOT / "docs" / "lldb.md"
PROMPT = r"\(lldb\) "
LLDB_REG = {"fp": "x29", "lr": "x30"}
UNAVAILABLE = {"amd64": "rcx", "i386": "eax", "arm64": "cpsr"}
THREAD_LINE = re.compile(r"^([* ]) thread #(\d+): tid = (\d+), (0x[0-9a-f]+)?.*?"
                         r"name = '(.*?)'(, stop reason = .*)?$")
TIMEOUT = 120


def _lldb() -> str:
    return os.environ.get("LLDB") or shutil.which("lldb-16") or shutil.which("lldb") or ""


class Lldb:
    """An interactive lldb with the plugin imported.

    lldb prints some things asynchronously (after the prompt, e.g. for
    'thread select'), so every command is followed by a marker command and
    its output is everything up to the marker.
    """

    def __init__(self, exe: str) -> None:
        env = debugger_env(dict(os.environ, TERM="dumb"))
        self.p = pexpect.spawn(exe, ["--no-lldbinit", "--no-use-colors"], env=env,
                               encoding="utf-8", timeout=TIMEOUT, echo=False,
                               dimensions=(200, 400))
        self.n = 0
        self.p.expect(PROMPT)
        self.cmd("settings set use-color false")
        self.cmd("settings set auto-confirm true")
        out = self.cmd(f"command script import {PLUGIN}")
        assert "error" not in out, out

    def cmd(self, line: str, timeout: float = TIMEOUT) -> str:
        self.n += 1
        self.p.sendline(line)
        self.p.expect(PROMPT, timeout=timeout)
        out = self.p.before
        marker = f"@@sync{self.n}@@"
        self.p.sendline(f"script print('@@sync' + '{self.n}@@')")
        self.p.expect(re.escape(marker) + r"\r?\n", timeout=timeout)
        out += self.p.before
        self.p.expect(PROMPT, timeout=timeout)
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out.replace("\r", ""))
        lines = text.split("\n")
        if lines and lines[0].strip() == line.strip():  # lldb's own echo of the command
            lines = lines[1:]
        return "\n".join(ln for ln in lines if "@@sync" not in ln)

    def server_pid(self) -> int:
        out = self.cmd("script print(kvm_lldb._state['server'].proc.pid)")
        return int(re.findall(r"^\d+$", out, re.M)[-1])

    def quit(self) -> None:
        self.p.sendline("quit")
        i = self.p.expect([pexpect.EOF, r"\[Y/n\]"], timeout=60)
        if i == 1:
            self.p.sendline("y")
            self.p.expect(pexpect.EOF, timeout=60)


def _threads(out: str) -> list:
    return [m.groups() for m in map(THREAD_LINE.match, out.splitlines()) if m]


def _registers(out: str) -> dict:
    return {m.group(1): m.group(2)
            for m in re.finditer(r"^\s*(\w+)\s*= (0x[0-9a-f]+|error: \w+)", out, re.M)}


@pytest.fixture
def lldb_session():
    exe = _lldb()
    if not exe:
        pytest.skip("lldb is not installed")
    sessions = []

    def start() -> Lldb:
        s = Lldb(exe)
        sessions.append(s)
        return s

    yield start
    for s in sessions:
        try:
            s.quit()
        except Exception:
            s.p.terminate(force=True)


@pytest.mark.parametrize("name", REAL_DUMPS)
def test_kvm_open_real_dump(real_dump_factory, lldb_session, name):  # noqa: F811
    dump = real_dump_factory(name)
    exp = dump.expected
    lldb = lldb_session()
    out = lldb.cmd(f"kvm-open {dump.kernel} {dump.core}")
    assert "Traceback" not in out and "error: kvm-open" not in out, out
    assert re.search(r"frame #0: 0x[0-9a-f]+", out), out
    assert "(crashed)" in out, out
    threads = _threads(lldb.cmd("thread list"))
    assert len(threads) == exp["numthread"], threads
    assert threads[0][0] == "*", threads  # the crashed thread is selected
    for pos, t in exp["threads"].items():
        assert threads[int(pos)][4] == t["name"], (pos, threads[int(pos)])
    assert int(threads[0][3], 16) == int(exp["threads"]["0"]["backtrace_pcs"][0], 16)
    for pos, t in exp["threads"].items():
        tid = threads[int(pos)][2]
        out = lldb.cmd(f"kvm-tid {tid}")
        assert f"thread #{int(pos) + 1}, name = '{t['name']}'" in out, out
        bt = lldb.cmd("bt")
        pcs = [int(pc, 16) for pc in re.findall(r"frame #\d+: (0x[0-9a-f]+)", bt)]
        want = [int(pc, 16) for pc in t["backtrace_pcs"]]
        # every frame, in order, through the library's unwind module (kvm_dbg.unwindinfo)
        assert pcs == want, bt
        names = [LLDB_REG.get(n, n) for n in t["registers"]]
        regs = _registers(lldb.cmd("register read " + " ".join(names)))
        for name, value in t["registers"].items():
            got = regs.get(LLDB_REG.get(name, name), "")
            assert got.startswith("0x") and int(got, 16) == int(value, 16), (name, value, regs)
        # registers the dump does not have: an error, never an invented value
        missing = _registers(lldb.cmd(f"register read {UNAVAILABLE[dump.arch]}"))
        assert missing == {UNAVAILABLE[dump.arch]: "error: unavailable"}, missing
    out = lldb.cmd("p *(int*)&hz")
    assert re.search(rf"^\(int\) \$\d+ = {exp['hz']}$", out, re.M), out
    out = lldb.cmd("memory read -s4 -fd -c1 &hz")
    assert re.search(rf"^0x[0-9a-f]+: {exp['hz']}$", out, re.M), out
    # unreadable memory: lldb's normal error, and the session goes on
    assert "error: memory read failed for 0x0" in lldb.cmd("memory read 0")
    assert len(_threads(lldb.cmd("thread list"))) == exp["numthread"]
    pid = lldb.server_pid()
    out = lldb.cmd("kvm-close")
    assert "error" not in out and "Traceback" not in out, out
    assert gone(pid, 10.0), "server still running after kvm-close"
    assert "error" in lldb.cmd("thread list")


def _doc_script(tmp_path: Path) -> Path:
    """The example script of docs/lldb.md, as a file."""
    text = DOC.read_text()
    m = re.search(r"```python\n(.*?)```", text, re.S)
    assert m, "docs/lldb.md has no ```python example"
    path = tmp_path / "kvm_walk.py"
    path.write_text(m.group(1))
    return path


def test_commands_and_errors(real_dump_factory, lldb_session, tmp_path):  # noqa: F811
    dump = real_dump_factory("vmcore-amd64-minidump")
    lldb = lldb_session()
    help_text = lldb.cmd("help kvm-open")
    assert OPEN_USAGE[len("usage: "):] in help_text and "crash dump" in help_text
    assert "kvm-tid TID|THREAD-ADDRESS" in lldb.cmd("help kvm-tid")
    # errors before anything is open: one line each, no traceback
    out = lldb.cmd("kvm-open /nonexistent/kernel /nonexistent/core").strip()
    assert out == "error: kvm-open: /nonexistent/kernel: No such file or directory"
    assert lldb.cmd("kvm-ps").strip().startswith("error: kvm-ps: no dump is open")
    assert lldb.cmd("kvm-close").strip() == "error: kvm-close: no dump is open"
    assert lldb.cmd("kvm-open a b c").strip() == \
        "error: kvm-open: " + OPEN_USAGE
    bogus = tmp_path / "not-a-core"
    bogus.write_bytes(b"\0" * 8192)
    out = lldb.cmd(f"kvm-open {dump.kernel} {bogus}").strip()
    assert out.startswith(f"error: kvm-open: {bogus}:") and "\n" not in out, out
    out = lldb.cmd(f"kvm-open {bogus} {dump.core}").strip()  # not a kernel at all
    assert out.startswith(f"error: kvm-open: {bogus}:") and "\n" not in out, out
    # a real one, KERNEL from the current target
    lldb.cmd(f"target create {dump.kernel}")
    out = lldb.cmd(f"kvm-open {dump.core}")
    assert "error" not in out, out
    again = lldb.cmd(f"kvm-open {dump.kernel} {dump.core}").strip()
    assert again.startswith(f"error: kvm-open: {dump.core}: a dump is already open")
    assert "\n" not in again
    assert "sysctl" in lldb.cmd("kvm-ps")
    assert "architecture: amd64" in lldb.cmd("kvm-info")
    for c in ("kvm-dmesg", "kvm-kld"):
        out = lldb.cmd(c)
        assert "error" not in out and "Traceback" not in out, out
    assert lldb.cmd("kvm-ps extra").strip() == "error: kvm-ps: this command takes no arguments"
    out = lldb.cmd("kvm-proc 28")
    assert "* thread #2, name = '(pid 28) pagedaemon/dom0 (on CPU 4)'" in out, out
    assert "tid = 100210" in lldb.cmd("thread info")
    assert lldb.cmd("kvm-tid 1").strip() == "error: kvm-tid: invalid tid"
    assert lldb.cmd("kvm-proc 99999").strip() == "error: kvm-proc: invalid pid"
    assert lldb.cmd("kvm-tid").strip() == "error: kvm-tid: usage: kvm-tid TID|THREAD-ADDRESS"
    assert "thread #1," in lldb.cmd("kvm-tid 100670")
    # writes refused, resume refused once (no endless loop), the session goes on
    assert "error" in lldb.cmd("memory write -s4 &hz 5")
    lldb.cmd("thread step-inst")
    assert re.search(r"^\(int\) \$\d+ = 100$", lldb.cmd("p *(int*)&hz"), re.M)
    # scripting: kvm_lldb.kvm() at the script prompt and from a command script file
    out = lldb.cmd("script print(kvm_lldb.kvm().read("
                   "lldb.target.FindSymbols('hz')[0].symbol.GetStartAddress()"
                   ".GetLoadAddress(lldb.target), 4))")
    assert "b'd\\x00\\x00\\x00'" in out, out
    script = _doc_script(tmp_path)
    out = lldb.cmd(f"command script import {script}")
    assert "error" not in out, out
    out = lldb.cmd("kvm-walk")
    assert "Traceback" not in out and "error" not in out, out
    assert "(pid 800) sysctl (crashed)" in out and "hz = 100" in out, out
    assert len(re.findall(r"^tid \d+", out, re.M)) == 16, out
    # after 'process detach', the same server takes a new connection
    addr = [ln for ln in lldb.cmd("script print(kvm_lldb._state['server'].address)")
            .splitlines() if ln.startswith("/")][-1]
    lldb.cmd("process detach")
    assert "not connected to the dump" in lldb.cmd("kvm-ps")
    out = lldb.cmd(f"process connect -p gdb-remote unix-connect://{addr}")
    assert len(_threads(lldb.cmd("thread list"))) == 16
    assert "sysctl" in lldb.cmd("kvm-ps")
    # leaving lldb stops the server
    pid = lldb.server_pid()
    lldb.quit()
    assert gone(pid, 10.0), "server still running after lldb exited"


def _objcopy() -> str:
    return shutil.which("llvm-objcopy") or shutil.which("objcopy") or ""


def test_resolver_is_lldb(real_dump_factory, lldb_session, tmp_path):  # noqa: F811
    """The symbols the library needs exist only in what lldb has loaded."""
    dump = real_dump_factory("vmcore-amd64-minidump")
    tool = _objcopy()
    if not tool:
        pytest.skip("no objcopy to strip the kernel")
    stripped = tmp_path / "kernel-amd64"
    syms = tmp_path / "debug" / "kernel-amd64.syms"
    syms.parent.mkdir()
    subprocess.run([tool, "--strip-all", dump.kernel, str(stripped)], check=True)
    subprocess.run([tool, "--only-keep-debug", dump.kernel, str(syms)], check=True)
    # The stripped kernel alone gives no threads: the server cannot find allproc & co.
    lldb = lldb_session()
    lldb.cmd(f"target create {stripped}")
    assert "hz" not in lldb.cmd("image lookup -s hz")
    lldb.cmd(f"kvm-open {dump.core}")
    assert len(_threads(lldb.cmd("thread list"))) == 1
    lldb.cmd("kvm-close")
    # With the symbols loaded into lldb (a module of the target), kvm-open resolves them
    lldb = lldb_session()
    lldb.cmd(f"target create {stripped}")
    lldb.cmd(f"target modules add {syms}")
    assert "kernel-amd64.syms`hz" in lldb.cmd("image lookup -s hz")
    out = lldb.cmd(f"kvm-open {dump.core}")
    assert "error" not in out, out
    threads = _threads(lldb.cmd("thread list"))
    assert len(threads) == dump.expected["numthread"]
    assert threads[0][4] == dump.expected["threads"]["0"]["name"]
    out = lldb.cmd("script print(kvm_lldb._state['server'].workdir)")
    workdir = [ln for ln in out.splitlines() if ln.startswith("/")][-1]
    table = json.loads((Path(workdir) / "symbols.json").read_text())
    assert table["hz"] == 0xFFFFFFFF81CD4C0C and table["kernbase"] == 0xFFFFFFFF80000000
    out = lldb.cmd("memory read -s4 -fd -c1 &hz")
    assert re.search(r"^0x[0-9a-f]+: 100$", out, re.M), out


def test_fixture_with_functions_and_panic(lldb_session, tmp_path):
    """A generated dump with a message buffer, a panic string and function symbols."""
    fixturegen = pytest.importorskip("fixturegen")
    from fixturegen.kernelstate import default_spec
    fx = fixturegen.build("amd64", "minidump", 3, str(tmp_path), kstate=default_spec("amd64"))
    lldb = lldb_session()
    out = lldb.cmd(f"kvm-open {fx.kernel_path} {fx.core_path}")
    assert "Unread portion of the kernel message buffer:" in out, out
    assert "panic: page fault" in out, out
    # the kernel is loaded at its link address: frame #0 has its function's name
    assert re.search(r"frame #0: 0x[0-9a-f]+ \S+`doadump \+ \d+", out), out
    assert out.index("panic: page fault") < out.index("frame #0"), out
    assert re.search(r"frame #\d+: 0x[0-9a-f]+ \S+`calltrap", lldb.cmd("bt")), "no calltrap"
    assert "zfs.ko" in lldb.cmd("kvm-kld")
    assert "panic: page fault" in lldb.cmd("kvm-dmesg")
