"""What a kgdb user sees, in interactive gdb and lldb (pexpect), on the bundled
example and the four real dumps: every thread's backtrace has the library's
frames with the same pcs in both debuggers; frames are named after the
kernel's symbols (or show a bare address), never after kvm_dbg's unwind
module; trap frames show as kgdb shows them and backtraces end as kgdb's
do, without a warning; kvm-open prints the crashed frame once; quitting
lldb and kvm-close say nothing."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import fixturegen
import pytest
from fixturegen.kernelstate import default_spec
from realdumps import REAL_DUMPS, real_dump_factory  # noqa: F401 (fixture)
from test_gdb_plugin import Gdb, _gdb_for
from test_lldb_plugin import PLUGIN as LLDB_PLUGIN
from test_lldb_plugin import PROMPT as LLDB_PROMPT
from test_lldb_plugin import Lldb, _lldb, _objcopy, _threads

import kvm_dbg
from kvm_dbg.debuggers import debugger_env
from kvm_dbg.kstate import archdata
from kvm_dbg.kstate.unwind import is_trap_function

pexpect = pytest.importorskip("pexpect")

SIGNAL = "<signal handler called>"
#: the bundled example, the real dumps, and generated i386/arm64 dumps with trap frames
DUMPS = ["example"] + REAL_DUMPS + ["fixture-i386", "fixture-arm64"]
#: lldb checks that an arm64 pc is 4-byte aligned: the generator's are not
LLDB_DUMPS = [d for d in DUMPS if d != "fixture-arm64"]


@dataclass
class Case:
    kernel: str
    core: str
    arch: str
    #: tid -> [(pc, function or None, in a trap-entry stub?)], the library's frames
    frames: Dict[int, List[tuple]]


@pytest.fixture
def case(request, example, real_dump_factory, tmp_path) -> Case:  # noqa: F811
    if request.param == "example":
        kernel, core, arch = str(example / "kernel"), str(example / "vmcore.0"), "amd64"
    elif request.param.startswith("fixture-"):
        arch = request.param.split("-", 1)[1]
        fx = fixturegen.build(arch, "minidump", 2, str(tmp_path), kstate=default_spec(arch))
        kernel, core = fx.kernel_path, fx.core_path
    else:
        dump = real_dump_factory(request.param)
        kernel, core, arch = dump.kernel, dump.core, dump.arch
    info = archdata.arch_info(arch)
    with kvm_dbg.open(kernel, core) as kvm:
        frames = {t.tid: [(f.pc, f.function, bool(f.function)
                           and is_trap_function(info, f.function)) for f in t.frames()]
                  for t in kvm.threads()}
    assert frames and all(frames.values())
    return Case(kernel, core, arch, frames)


# -- gdb ------------------------------------------------------------------------

GDB_FRAME = re.compile(r"^#(\d+)\s+(?:(0x[0-9a-f]+) in (\S+) \(\)|(<signal handler called>))$")
GDB_PCS = ("python exec(\"for t in sorted(gdb.selected_inferior().threads(), key=lambda t: t.num):"
           "\\n t.switch(); f = gdb.newest_frame(); pcs = []"
           "\\n while f is not None: pcs.append(f.pc()); f = f.older()"
           "\\n print('pcs', t.ptid[1], ' '.join(hex(p) for p in pcs))\")")


@pytest.mark.parametrize("case", DUMPS, indirect=True)
def test_gdb_backtraces(case):
    exe = _gdb_for(case.arch)
    if not exe:
        pytest.skip(f"no gdb able to debug {case.arch}")
    g = Gdb(exe)
    try:
        out = g.cmd(f"kvm-open {case.kernel} {case.core}")
        assert "kvm-open:" not in out, out
        # the crashed frame once (target remote's stop print is suppressed)
        assert len(re.findall(r"^#0 ", out, re.M)) == 1, out
        bts = g.cmd("thread apply all bt")
        assert "Backtrace stopped" not in bts and "Python Exception" not in bts, bts
        threads = re.split(r"^Thread \d+ \(Thread (\d+) ", bts, flags=re.M)[1:]
        got = {int(tid): text for tid, text in zip(threads[::2], threads[1::2])}
        assert set(got) == set(case.frames)
        pcs = {int(tid): [int(p, 16) for p in rest.split()] for tid, rest in
               re.findall(r"^pcs (\d+) (.*)$", g.cmd(GDB_PCS), re.M)}
        for tid, want in case.frames.items():
            lines = [m.groups() for m in map(GDB_FRAME.match, got[tid].splitlines()) if m]
            assert [int(n) for n, *_ in lines] == list(range(len(want))), (tid, got[tid])
            assert pcs[tid] == [pc for pc, _f, _t in want], tid
            for i, (_n, pc, name, sig) in enumerate(lines):
                if want[i][2]:         # kgdb's trapframe unwinders make signal frames
                    assert sig == SIGNAL, (tid, i, got[tid])
                else:
                    assert int(pc, 16) == want[i][0] and name == (want[i][1] or "??"), \
                        (tid, i, got[tid])
        g.cmd("kvm-close")
    finally:
        g.quit()


# -- lldb -----------------------------------------------------------------------------

LLDB_FRAME = re.compile(r"^\s*\*?\s*frame #(\d+): (0x[0-9a-f]+)(.*)$")


@pytest.mark.parametrize("case", LLDB_DUMPS, indirect=True)
def test_lldb_backtraces(case):
    exe = _lldb()
    if not exe:
        pytest.skip("lldb is not installed")
    lldb = Lldb(exe)
    try:
        out = lldb.cmd(f"kvm-open {case.kernel} {case.core}")
        assert "kvm-open" not in out, out          # neither an error nor a warning
        tids = [int(t[2]) for t in _threads(lldb.cmd("thread list"))]
        assert sorted(tids) == sorted(case.frames)
        bts = lldb.cmd("bt all")
        per_thread = re.split(r"^[* ] thread #\d+,.*$", bts, flags=re.M)[1:]
        assert len(per_thread) == len(tids), bts
        for tid, text in zip(tids, per_thread):
            want = case.frames[tid]
            lines = [m.groups() for m in map(LLDB_FRAME.match, text.splitlines()) if m]
            assert [int(n) for n, _pc, _rest in lines] == list(range(len(want))), (tid, text)
            assert [int(pc, 16) for _n, pc, _rest in lines] == [pc for pc, _f, _t in want], \
                (tid, text)
            for (_n, _pc, rest), (wpc, function, _t) in zip(lines, want):
                assert "unwind" not in rest and "??" not in rest, (tid, text)
                if function is None:
                    assert rest.strip() == "", (tid, text)          # a bare address
                else:   # the kernel's symbol + offset
                    start = wpc - int(re.search(r" \+ (\d+)$", rest).group(1)) \
                        if " + " in rest else wpc
                    assert rest.strip().split(" + ")[0] == \
                        f"{Path(case.kernel).name}`{function}", (tid, text)
                    assert lldb_start(case, function) == start, (tid, text)
        out = lldb.cmd("image lookup -a $pc")
        assert "unwind" not in out, out
        if case.frames[tids[0]][0][1] is None:
            assert "Summary" not in out, out        # no module holds the pc
        else:
            assert f"{Path(case.kernel).name}`{case.frames[tids[0]][0][1]}" in out, out
        lldb.cmd("kvm-close")
    finally:
        lldb.quit()


def lldb_start(case: Case, function: str) -> int:
    from kvm_dbg.elfkernel import KernelImage
    value = KernelImage(case.kernel).lookup(function)
    assert value is not None
    return value


# -- quitting lldb ----------------------------------------------------------------------

def _spawn_lldb() -> pexpect.spawn:
    exe = _lldb()
    if not exe:
        pytest.skip("lldb is not installed")
    env = debugger_env(dict(os.environ, TERM="dumb"))
    p = pexpect.spawn(exe, ["--no-lldbinit", "--no-use-colors"], env=env, encoding="utf-8",
                      timeout=120, echo=False, dimensions=(200, 400))
    p.expect(LLDB_PROMPT)
    p.sendline(f"command script import {LLDB_PLUGIN}")
    p.expect(LLDB_PROMPT)
    return p


def _quiet(p: pexpect.spawn, wait: float = 2.0, limit: float = 120.0) -> str:
    """Everything lldb prints until it has been quiet for ``wait`` seconds
    (it prints a selected thread's status after its prompt, then redraws)."""
    out, deadline = "", time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            out += p.read_nonblocking(65536, timeout=wait)
        except pexpect.TIMEOUT:
            return out.replace("\r", "")
    raise AssertionError(f"lldb never went quiet: {out[-2000:]!r}")


def test_lldb_quit_and_close_are_silent(example):
    """No "Quitting LLDB will kill one or more processes", no "Process N
    detached": a dump is no process anyone can kill."""
    kernel, core = example / "kernel", example / "vmcore.0"
    p = _spawn_lldb()
    p.sendline(f"kvm-open {kernel} {core}")
    out = _quiet(p)
    assert "panic: page fault" in out and "error" not in out, out
    p.sendline("kvm-close")
    out = _quiet(p)
    assert out.replace(LLDB_PROMPT.replace("\\", ""), "").strip() in ("", "kvm-close"), out
    p.sendline("thread list")
    assert "error" in _quiet(p)             # the process is gone, as after a detach
    p.sendline(f"kvm-open {kernel} {core}")             # open again, then just quit
    assert "panic: page fault" in _quiet(p)
    p.sendline("quit")
    p.expect(pexpect.EOF, timeout=60)
    assert "Quitting" not in p.before and "[Y/n]" not in p.before, p.before
    # the setting kvm-open lifts while a dump is open comes back at kvm-close
    p = _spawn_lldb()
    p.sendline(f"kvm-open {kernel} {core}")
    _quiet(p)
    p.sendline("kvm-close")
    _quiet(p)
    p.sendline("settings show interpreter.prompt-on-quit")
    assert "interpreter.prompt-on-quit (boolean) = true" in _quiet(p)
    p.sendline("quit")
    p.expect(pexpect.EOF, timeout=60)


def _build_id_kernel(kernel: Path, out: Path, objcopy: str) -> Path:
    note = out.parent / "build-id.note"
    note.write_bytes(struct.pack("<III", 4, 20, 3) + b"GNU\0" + bytes(range(1, 21)))
    subprocess.run([objcopy, "--add-section", f".note.gnu.build-id={note}",
                    "--set-section-flags", ".note.gnu.build-id=alloc,readonly",
                    str(kernel), str(out)], check=True, capture_output=True)
    return out


def _split_kernel(kernel: Path, out: Path, objcopy: str) -> Path:
    """``kernel`` without DWARF, with a .gnu_debuglink to ``kernel.debug`` beside it."""
    debug = out.parent / "kernel.debug"
    subprocess.run([objcopy, "--only-keep-debug", str(kernel), str(debug)], check=True)
    subprocess.run([objcopy, "--strip-debug", f"--add-gnu-debuglink={debug}", str(kernel),
                    str(out)], check=True)
    return out


@pytest.mark.parametrize("variant", ["build-id", "kernel.debug"])
def test_lldb_trap_frames_with_other_kernel_files(example, tmp_path, variant):
    """The stand-in takes the kernel's identity however lldb computes it (build-id,
    or the CRC a .gnu_debuglink names) and its symbol file, wherever lldb found
    it: trap frames, names and types, and the kernel module back at kvm-close."""
    objcopy = _objcopy()
    if not objcopy:
        pytest.skip("objcopy is not installed")
    d = tmp_path / variant
    d.mkdir()
    kernel = (_build_id_kernel if variant == "build-id" else _split_kernel)(
        example / "kernel", d / "kernel", objcopy)
    symfile = kernel if variant == "build-id" else d / "kernel.debug"
    lldb = Lldb(_lldb() or pytest.skip("lldb is not installed"))
    try:
        out = lldb.cmd(f"kvm-open {kernel} {example / 'vmcore.0'}")
        assert "kvm-open" not in out, out
        bt = lldb.cmd("bt 9")
        assert re.search(r"frame #7: 0xffffffff80240759 kernel`calltrap \+ 89$", bt, re.M), bt
        assert re.search(r"frame #8: 0xffffffff8024085a kernel`strlen \+ 90$", bt, re.M), bt
        assert re.search(r'^\(const char \*\) \$0 = 0x[0-9a-f]+ "page fault"$',
                         lldb.cmd("p panicstr"), re.M)
        images = [ln.split()[-1] for ln in lldb.cmd("image list").splitlines() if ln.strip()]
        assert images[0] != str(kernel) and images[0].endswith("/kernel"), images  # stand-in
        assert images[1] == str(symfile), images              # with the kernel's symbols
        lldb.cmd("kvm-close")
        images = lldb.cmd("image list")
        assert re.search(rf"0xffffffff80200000 {re.escape(str(kernel))}", images), images
    finally:
        lldb.quit()
