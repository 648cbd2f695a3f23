"""Every bundled example (examples/kernel.gz + vmcore.0.gz for amd64, examples/<arch>/
for the others) end to end, checked against the truth the fixture generator recorded
(its manifest, regenerated here and first proven to describe the committed dump):

* ``kvm-dbg triage|threads|ps|dmesg|kld --json``;
* one gdb-multiarch batch session per example: kvm-open selects the crashed thread,
  ``info threads`` lists every thread, ``thread apply all bt`` gives every frame of every
  thread (pc and function), the PCB registers under gdb's names, typed prints of kernel
  objects and of the trap frame;
* the same with lldb-16, for every architecture it unwinds: riscv is the exception
  (lldb 16 has no RISC-V ABI plugin; a test pins what it does there).

The committed examples are used as they are; tests/test_example.py covers amd64's
examples/run.sh, and test_rebuild_every_arch here the reproducible rebuild.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from elftools.elf.elffile import ELFFile
from fixturegen.example import EXAMPLES, PARENTS, build_example
from fixturegen.kernelstate import NOCPU, facts
from kldwarn import other_warnings

import kvm_dbg
from kvm_dbg.cli import main as kvm_dbg_main
from kvm_dbg.debuggers import debugger_env
from kvm_dbg.kstate.archdata import arch_info
from kvm_dbg.kstate.unwind import is_trap_function
from kvm_dbg.rsp.regs import regset_for

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "examples"
GDB_PLUGIN = ROOT / "plugins" / "gdb" / "kvm_gdb.py"
LLDB_PLUGIN = ROOT / "plugins" / "lldb" / "kvm_lldb.py"
ARCHES = ["amd64", "i386", "arm64", "arm", "riscv", "powerpc64", "powerpc", "mips"]
#: lldb 16 unwinds all but riscv (no RISC-V ABI plugin: it stops at frame 0)
LLDB_UNWINDS = [a for a in ARCHES if a != "riscv"]
MACHINES = {"amd64": "EM_X86_64", "i386": "EM_386", "arm64": "EM_AARCH64", "arm": "EM_ARM",
            "riscv": "EM_RISCV", "powerpc64": "EM_PPC64", "powerpc": "EM_PPC",
            "mips": "EM_MIPS"}
TIMEOUT = 300
#: where gdb still ends backtraces with "Backtrace stopped" (none: every
#: architecture's unwind module marks the ends of backtraces as outermost)
GDB_BACKTRACE_STOPPED: Tuple[str, ...] = ()


def _load_build():
    """examples/build.py as a module (its per-arch C member names of PCB/trapframe)."""
    spec = importlib.util.spec_from_file_location("example_build", EXAMPLES_DIR / "build.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod        # (dataclasses look their module up)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


BUILD = _load_build()


@dataclass
class Example:
    arch: str
    dir: Path                     # where the committed .gz files are
    kernel: Path
    core: Path
    fx: Any                       # the generator's Fixture (manifest)

    @property
    def k(self):
        return self.fx.manifest.kstate

    @property
    def crashed(self):
        return self.k.threads[0]

    def trapframe(self) -> Tuple[int, Dict[str, int]]:
        """(address, registers) of the crashed thread's trap frame."""
        f = facts(self.arch, self.k.osreldate)
        regs = next(iter(self.crashed.trapframes.values()))
        return regs[f.sp] - f.tf_span, regs


@pytest.fixture(scope="module", params=ARCHES)
def ex(request, tmp_path_factory) -> Example:
    arch = request.param
    src = EXAMPLES_DIR if arch == "amd64" else EXAMPLES_DIR / arch
    d = tmp_path_factory.mktemp(f"example-{arch}")
    for name in ("kernel", "vmcore.0"):
        with gzip.open(src / f"{name}.gz") as f, open(d / name, "wb") as out:
            shutil.copyfileobj(f, out)
    fx = build_example(str(d / "generated"), arch)
    return Example(arch, src, d / "kernel", d / "vmcore.0", fx)


def _hex(text: str) -> int:
    return int(text, 16)


def _value(text: str) -> int:
    """The number a debugger printed with ``p/x`` (``$1 = 0x...``, ``(int) $1 = ...``)."""
    m = re.search(r"= (0x[0-9a-f]+)", text)
    assert m, text
    return int(m.group(1), 16)


# -- the committed files ------------------------------------------------------------

def test_committed_example(ex):
    """Small, the generator's dump byte for byte, a kernel of the architecture with
    real DWARF types, and the library's view = the manifest."""
    for name in ("kernel.gz", "vmcore.0.gz"):
        assert (ex.dir / name).stat().st_size < 100_000, name
    assert ex.core.read_bytes() == Path(ex.fx.core_path).read_bytes()
    with open(ex.kernel, "rb") as f:
        elf = ELFFile(f)
        assert elf.header["e_machine"] == MACHINES[ex.arch]
        names = {die.attributes["DW_AT_name"].value.decode()
                 for cu in elf.get_dwarf_info().iter_CUs() for die in cu.iter_DIEs()
                 if die.tag == "DW_TAG_structure_type" and "DW_AT_name" in die.attributes}
    assert {"proc", "thread", "pcb", "trapframe", "msgbuf", "linker_file"} <= names
    ea = EXAMPLES[ex.arch]
    with kvm_dbg.open(str(ex.kernel), str(ex.core)) as kd:
        assert kd.arch == ex.arch
        assert kd.format.startswith("ELF" if ea.fmt == "elf" else f"minidump v{ea.version}")
        assert kd.panic_info().version_mismatch is False
        got = kd.threads()
        assert [t.tid for t in got] == [t.tid for t in ex.k.threads]
        for t, want in zip(got, ex.k.threads):
            frames = t.frames()
            assert [f.pc for f in frames] == want.backtrace, t.name
            assert [f.function for f in frames] == want.functions, t.name
            assert t.registers == want.registers, t.name
            for i, regs in want.trapframes.items():
                assert {r: frames[i].regs.get(r) for r in regs} == regs, (t.name, i)
        assert other_warnings(kd.warnings) == []


# -- kvm-dbg -----------------------------------------------------------------------

def _cli(*args: str) -> Any:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert kvm_dbg_main(list(args)) == 0
    return json.loads(out.getvalue())


def test_cli_gives_the_generators_truth(ex):
    k, files = ex.k, (str(ex.kernel), str(ex.core))
    threads = _cli("threads", "--json", *files)["threads"]
    assert [(t["tid"], t["pid"], t["name"], t["crashed"], t["oncpu"]) for t in threads] == [
        (t.tid, t.pid, t.name, t.crashed, None if t.oncpu == NOCPU else t.oncpu)
        for t in k.threads]
    assert [{r: _hex(v) for r, v in t["registers"].items()} for t in threads] == [
        t.registers for t in k.threads]
    ps = _cli("ps", "--json", *files)["procs"]
    assert [(p["pid"], p["comm"], p["tids"], _hex(p["address"])) for p in ps] == [
        (p.pid, p.comm, p.tids, p.addr) for p in k.procs]
    assert {p["pid"]: p["ppid"] for p in ps} == {p.pid: PARENTS.get(p.pid) for p in k.procs}
    assert {p["state"] for p in ps} == {"PRS_NORMAL"}
    klds = _cli("kld", "--json", *files)["klds"]
    assert [(m["name"], m["path"], _hex(m["address"])) for m in klds] == [
        (m.name, m.path, m.address) for m in k.klds]
    dmesg = _cli("dmesg", "--json", *files)
    assert dmesg["text"] == k.msgbuf_text and dmesg["unread"] == k.msgbuf_unread
    tri = _cli("triage", "--json", *files)
    assert (tri["arch"], tri["panic"], tri["nthreads"]) == (ex.arch, k.panicstr,
                                                           len(k.threads))
    assert tri["hostname"] == k.hostname and tri["osreldate"] == k.osreldate
    assert tri["kernel_matches_dump"] is True and other_warnings(tri["warnings"]) == []
    ct = tri["crashed_thread"]
    assert (ct["tid"], ct["name"]) == (k.dumptid, ex.crashed.name)
    bt = [(_hex(f["pc"]), f["symbol"].split("+")[0]) for f in ct["backtrace"]]
    want = list(zip(ex.crashed.backtrace, ex.crashed.functions))
    assert bt == want[:len(bt)] and len(bt) == min(len(want), 16)
    assert tri["msgbuf_tail"][-1] == k.msgbuf_text.rstrip("\n").splitlines()[-1]


# -- gdb-multiarch -------------------------------------------------------------------

def _gdb(ex: Example, cmds: List[str]) -> Dict[str, str]:
    """One batch session; the output of each command, keyed by the command."""
    gdb = shutil.which("gdb-multiarch")
    assert gdb, "gdb-multiarch is not installed (scripts/bootstrap.sh installs it)"
    args = [gdb, "-batch", "-nx", "-ex", "set pagination off", "-ex", "set width 0",
            "-ex", f"source {GDB_PLUGIN}", "-ex", "echo @@ kvm-open\\n",
            "-ex", f"kvm-open {ex.kernel} {ex.core}"]
    for c in cmds:
        args += ["-ex", f"echo @@ {c}\\n", "-ex", c]
    p = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT,
                       env=debugger_env())
    out = p.stdout + p.stderr
    assert "Traceback" not in out and "Python Exception" not in out, out
    return dict(s.split("\n", 1) for s in out.split("@@ ")[1:])


#: gdb shows a trap-entry stub's frame as kgdb does (a signal frame: no pc, no name)
SIGNAL = "<signal handler called>"
#: every frame of every thread as gdb's Python API sees it: "frame TID PC NAME"
GDB_FRAMES = ("python exec(\"for t in sorted(gdb.selected_inferior().threads(), "
              "key=lambda t: t.num):\\n t.switch(); f = gdb.newest_frame()"
              "\\n while f is not None: print('frame', t.ptid[1], hex(f.pc()), f.name());"
              " f = f.older()\")")


def _gdb_threads(text: str) -> Dict[int, List[Tuple[int, str]]]:
    """``thread apply all bt`` -> {tid: [(pc, function)]}; a signal frame is
    (None, SIGNAL)."""
    out: Dict[int, List[Tuple[int, str]]] = {}
    for block in re.split(r"\n(?=Thread \d+ \(Thread )", text):
        m = re.match(r"Thread \d+ \(Thread (\d+) ", block)
        if m:
            out[int(m.group(1))] = [(int(pc, 16), fn) if pc else (None, SIGNAL)
                                    for pc, fn in re.findall(
                r"^#\d+\s+(?:(0x[0-9a-f]+) in (\S+) \(\)|<signal handler called>)",
                block, re.M)]
    return out


def _gdb_frames(text: str, width: int) -> Dict[int, List[Tuple[int, str]]]:
    """GDB_FRAMES' output -> {tid: [(pc, function)]}."""
    out: Dict[int, List[Tuple[int, str]]] = {}
    for tid, pc, name in re.findall(r"^frame (\d+) (0x[0-9a-f]+) (\S+)$", text, re.M):
        out.setdefault(int(tid), []).append((int(pc, 16) & ((1 << (8 * width)) - 1), name))
    return out


def _reg_names(ex: Example, lldb: bool) -> Dict[str, str]:
    """Library register name -> the name the debugger shows."""
    rs = regset_for(ex.arch, 8 if facts(ex.arch, ex.k.osreldate).w == 8 else 4)
    names = {}
    for r in rs.regs:
        for n in (r.name,) + r.aliases:
            names.setdefault(n, r.name if lldb else rs.user_name(r))
    return names


def test_gdb_multiarch_session(ex):
    k, crashed = ex.k, ex.crashed
    names = _reg_names(ex, lldb=False)
    regs = sorted(crashed.registers)
    tf, tf_regs = ex.trapframe()
    pcb_field, tf_field = BUILD.FIELDS[ex.arch]
    f = facts(ex.arch, k.osreldate)
    cmds = ["info threads", "thread apply all bt", "info registers"]
    cmds += [f"p/x ${names[r]}" for r in regs]
    cmds += ["print *allproc.lh_first->p_threads.tqh_first", "print *msgbufp",
             f"p/x ((struct trapframe *){tf:#x})->{tf_field(f.pc)}",
             f"p/x ((struct trapframe *){tf:#x})->{tf_field(f.fp)}",
             f"p/x ((struct pcb *)&dumppcb)->{pcb_field(f.sp)}", "print panicstr",
             GDB_FRAMES]                           # (last: it switches threads)
    out = _gdb(ex, cmds)
    # kvm-open: the crashed thread, stopped in its PCB's frame
    top = re.search(r"^#0\s+(0x[0-9a-f]+) in (\S+) ", out["kvm-open"], re.M)
    assert top and (int(top.group(1), 16), top.group(2)) == (crashed.backtrace[0],
                                                             crashed.functions[0]), out["kvm-open"]
    lines = [ln for ln in out["info threads"].splitlines() if re.match(r"^[* ]\s+\d+\s", ln)]
    assert [re.search(r'"(.*)"', ln).group(1) for ln in lines] == [t.name for t in k.threads]
    assert lines[0].startswith("*")
    bts = _gdb_threads(out["thread apply all bt"])
    assert set(bts) == {t.tid for t in k.threads}
    info = arch_info(ex.arch, f.w)
    frames = _gdb_frames(next(v for c, v in out.items() if c.startswith("python")), f.w)
    bt = out["thread apply all bt"]
    assert "Backtrace stopped" not in bt or ex.arch in GDB_BACKTRACE_STOPPED, bt
    for t in k.threads:
        want = list(zip(t.backtrace, t.functions))
        assert frames[t.tid] == want, t.name              # every frame: pc and name
        # as kgdb shows them: trap-entry stubs as signal frames
        assert bts[t.tid] == [(None, SIGNAL) if is_trap_function(info, fn) else (pc, fn)
                              for pc, fn in want], t.name
    for r in regs:
        got = re.search(r"= (0x[0-9a-f]+)", out[f"p/x ${names[r]}"])
        assert got and int(got.group(1), 16) == crashed.registers[r], (r, out[f"p/x ${names[r]}"])
        assert re.search(rf"^\s*{names[r]}\b", out["info registers"], re.M) or ex.arch == "mips"
    td = out["print *allproc.lh_first->p_threads.tqh_first"]
    assert f"td_tid = {k.threads[0].tid}" in td and 'td_name = "sysctl"' in td
    assert f"msg_size = {k.msgbuf_size}" in out["print *msgbufp"]
    assert _value(out[f"p/x ((struct trapframe *){tf:#x})->{tf_field(f.pc)}"]) == tf_regs[f.pc]
    assert _value(out[f"p/x ((struct trapframe *){tf:#x})->{tf_field(f.fp)}"]) == tf_regs[f.fp]
    assert _value(out[f"p/x ((struct pcb *)&dumppcb)->{pcb_field(f.sp)}"]) == \
        crashed.registers[f.sp]
    assert f'"{k.panicstr}"' in out["print panicstr"]


# -- lldb-16 -----------------------------------------------------------------------

def _lldb(ex: Example, cmds: List[str]) -> Dict[str, str]:
    lldb = shutil.which("lldb-16") or shutil.which("lldb")
    assert lldb, "lldb-16 is not installed (scripts/bootstrap.sh installs it)"
    args = [lldb, "--no-use-colors", "-b", "-o", f"command script import {LLDB_PLUGIN}",
            "-o", f"kvm-open {ex.kernel} {ex.core}"]
    for c in cmds:
        args += ["-o", c]
    p = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT,
                       env=debugger_env())
    out = p.stdout + p.stderr
    assert "Traceback" not in out, out
    sections = {}
    for part in out.split("(lldb) ")[1:]:
        cmd, _, text = part.partition("\n")
        sections[cmd.strip()] = text
    return sections


def _lldb_threads(listing: str, text: str) -> Dict[int, List[Tuple[int, str]]]:
    """``thread list`` + ``bt all`` -> {tid: [(pc, function)]}."""
    tids = {int(n): int(t) for n, t in re.findall(r"thread #(\d+): tid = (\d+)", listing)}
    out: Dict[int, List[Tuple[int, str]]] = {}
    tid = None
    for line in text.splitlines():
        m = re.match(r"^[* ] thread #(\d+),", line)
        if m:
            tid = tids[int(m.group(1))]
            out[tid] = []
            continue
        m = re.match(r"^\s+[* ]? ?frame #\d+: (0x[0-9a-f]+) (\S+)`(\w+)", line)
        if m and tid is not None:
            # the kernel's own module names every frame (issue 14: never kvm_dbg's)
            assert m.group(2) == "kernel", line
            out[tid].append((int(m.group(1), 16), m.group(3)))
    return out


def _lldb_session(ex: Example) -> Dict[str, str]:
    tf, _ = ex.trapframe()
    _, tf_field = BUILD.FIELDS[ex.arch]
    f = facts(ex.arch, ex.k.osreldate)
    return _lldb(ex, ["thread list", "bt all", "register read", "p *msgbufp",
                      f"p/x ((struct trapframe *){tf:#x})->{tf_field(f.pc)}",
                      "p allproc.lh_first->p_threads.tqh_first->td_tid"])


def _check_lldb_common(ex: Example, out: Dict[str, str]) -> None:
    k, crashed = ex.k, ex.crashed
    listed = re.findall(r"thread #\d+: tid = (\d+), .*name = '(.*?)'", out["thread list"])
    assert [(int(t), n) for t, n in listed] == [(t.tid, t.name) for t in k.threads]
    assert re.search(r"^\* thread #1: tid = " + str(k.dumptid), out["thread list"], re.M)
    names = _reg_names(ex, lldb=True)
    shown = dict(re.findall(r"^\s+(\w+) = (0x[0-9a-f]+)", out["register read"], re.M))
    for r, v in crashed.registers.items():
        assert int(shown[names[r]], 16) == v, (r, names[r])
    assert f"msg_size = {k.msgbuf_size}" in out["p *msgbufp"]
    assert re.search(rf"= {k.dumptid}\b", out["p allproc.lh_first->p_threads.tqh_first->td_tid"])


@pytest.mark.parametrize("ex", LLDB_UNWINDS, indirect=True)
def test_lldb_session(ex):
    out = _lldb_session(ex)
    _check_lldb_common(ex, out)
    assert "kernel.unwind" not in out["bt all"] and "unwind" not in out["bt all"]
    bts = _lldb_threads(out["thread list"], out["bt all"])
    assert set(bts) == {t.tid for t in ex.k.threads}
    for t in ex.k.threads:
        assert bts[t.tid] == list(zip(t.backtrace, t.functions)), t.name
    tf, regs = ex.trapframe()
    f = facts(ex.arch, ex.k.osreldate)
    pc_cmd = [c for c in out if c.startswith("p/x ((struct trapframe *)")][0]
    assert _value(out[pc_cmd]) == regs[f.pc]


@pytest.mark.parametrize("ex", ["riscv"], indirect=True)
def test_lldb_riscv_without_unwinding(ex):
    """lldb 16 on riscv: threads, registers, memory and types work; it unwinds no
    further than frame 0 (no RISC-V ABI plugin in lldb 16, docs/formats.md)."""
    out = _lldb_session(ex)
    _check_lldb_common(ex, out)
    bts = _lldb_threads(out["thread list"], out["bt all"])
    for t in ex.k.threads:
        assert bts[t.tid] == [(t.backtrace[0], t.functions[0])], t.name


# -- rebuild ------------------------------------------------------------------------

def test_rebuild_every_arch(tmp_path):
    """examples/build.py --arch all reproduces every committed example byte for byte
    (amd64 is tests/test_example.py's)."""
    for arch in ARCHES[1:]:
        assert shutil.which(BUILD.TOOLCHAINS[arch].cc), \
            f"{BUILD.TOOLCHAINS[arch].cc} is not installed (scripts/bootstrap.sh installs it)"
    p = subprocess.run([sys.executable, str(EXAMPLES_DIR / "build.py"), "--arch", "all",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    for arch in ARCHES[1:]:
        new, old = tmp_path / arch, EXAMPLES_DIR / arch
        assert (new / "vmcore.0.gz").read_bytes() == (old / "vmcore.0.gz").read_bytes(), arch
        if _producer(new / "kernel.gz") == _producer(old / "kernel.gz"):   # the same gcc
            assert (new / "kernel.gz").read_bytes() == (old / "kernel.gz").read_bytes(), arch


def _producer(path: Path) -> str:
    with gzip.open(path) as f:
        elf = ELFFile(io.BytesIO(f.read()))
        cu = next(elf.get_dwarf_info().iter_CUs())
        return cu.get_top_DIE().attributes["DW_AT_producer"].value.decode()
