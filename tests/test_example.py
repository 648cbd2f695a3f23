"""The bundled example (examples/): the committed kernel + dump, kvm-dbg triage, a gdb
batch session with DWARF types, examples/run.sh from a clean copy, and the rebuild."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from kldwarn import other_warnings

import kvm_dbg

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PLUGIN = ROOT / "plugins" / "gdb" / "kvm_gdb.py"
KVM_DBG = Path(sys.executable).parent / "kvm-dbg"
CRASH_STACK = ["doadump", "kern_reboot", "vpanic", "panic", "trap_fatal", "trap_pfault",
               "trap", "calltrap", "strlen", "sysctl_handle_string",
               "sysctl_root_handler_locked", "sysctl_root", "userland_sysctl",
               "sys___sysctl", "amd64_syscall", "fast_syscall_common"]


def _producer(path: Path) -> str:
    with open(path, "rb") as f:
        cu = next(ELFFile(f).get_dwarf_info().iter_CUs())
        return cu.get_top_DIE().attributes["DW_AT_producer"].value.decode()


def test_committed_pair(example):
    assert (EXAMPLES / "kernel.gz").stat().st_size < 100_000
    assert (EXAMPLES / "vmcore.0.gz").stat().st_size < 200_000
    with open(example / "kernel", "rb") as f:
        elf = ELFFile(f)
        h = elf.header
        assert (h["e_type"], h["e_machine"], elf.elfclass) == ("ET_EXEC", "EM_X86_64", 64)
        assert elf.has_dwarf_info()
        names = {d.attributes["DW_AT_name"].value.decode()
                 for cu in elf.get_dwarf_info().iter_CUs() for d in cu.iter_DIEs()
                 if d.tag == "DW_TAG_structure_type" and "DW_AT_name" in d.attributes}
    assert {"proc", "thread", "pcb", "trapframe", "msgbuf", "linker_file"} <= names
    with kvm_dbg.open(str(example / "kernel"), str(example / "vmcore.0")) as kd:
        assert (kd.arch, kd.format) == ("amd64", "minidump v3")
        info = kd.panic_info()
        assert info.panicstr == "page fault" and info.version_mismatch is False
        ts = kd.threads()
        assert ts[0].name == "(pid 812) sysctl (crashed)" and ts[0].tid == 100120
        assert [f.function for f in ts[0].frames()] == CRASH_STACK
        assert [p.comm for p in kd.procs()] == ["sysctl", "sshd", "syncer", "intr", "idle",
                                                 "init", "kernel"]
        assert other_warnings(kd.warnings) == []


def test_triage(example):
    out = subprocess.run([sys.executable, "-m", "kvm_dbg.cli", "triage",
                          str(example / "kernel"), str(example / "vmcore.0")],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert re.search(r"^panic:\s+page fault$", out, re.M)
    assert "crashed:   (pid 812) sysctl (crashed) (tid 100120)" in out
    frames = re.findall(r"^\s+#(\d+)\s+0x[0-9a-f]+\s+(\w+)\+0x[0-9a-f]+$", out, re.M)
    assert [f for _, f in frames] == CRASH_STACK
    assert "Fatal trap 12: page fault while in kernel mode" in out
    assert "fixture: ..." not in out


def _gdb(kernel: Path, core: Path, *cmds: str) -> str:
    gdb = shutil.which("gdb")
    if not gdb:
        pytest.skip("gdb is not installed")
    args = [gdb, "-batch", "-nx", "-ex", "set osabi none", "-ex", f"source {PLUGIN}",
            "-ex", f"kvm-open {kernel} {core}"]
    for c in cmds:
        args += ["-ex", f"echo @@ {c}\\n", "-ex", c]
    p = subprocess.run(args, capture_output=True, text=True, timeout=180)
    return p.stdout + p.stderr


def test_gdb_typed_session(example):
    out = _gdb(example / "kernel", example / "vmcore.0", "bt", "info threads", "frame 7",
               "p/x *(struct trapframe *)$rsp", "print allproc.lh_first->p_comm",
               "print allproc.lh_first->p_pptr->p_comm",
               "print *allproc.lh_first->p_threads.tqh_first",
               "print allproc.lh_first->p_threads.tqh_first->td_proc->p_pid",
               "print *msgbufp", "print panicstr", "ptype struct thread", "print hz")
    sec = dict(s.split("\n", 1) for s in out.split("@@ ")[1:])
    bt = re.findall(r"^#\d+\s+(?:0x[0-9a-f]+ in (\w+) \(\)|(<signal handler called>))$",
                    sec["bt"], re.M)
    # trap frames as kgdb shows them (its trapframe unwinders make signal frames)
    assert [f or sig for f, sig in bt] == [
        "<signal handler called>" if f in ("calltrap", "fast_syscall_common") else f
        for f in CRASH_STACK]
    assert sec["frame 7"].startswith("#7  <signal handler called>"), sec["frame 7"]
    assert '"(pid 812) sysctl (crashed)"' in sec["info threads"]
    assert "in cpustop_handler ()" in sec["info threads"]
    tf = sec["p/x *(struct trapframe *)$rsp"]
    assert "tf_trapno = 0xc" in tf and "tf_rdi = 0x0" in tf and "tf_cs = 0x20" in tf
    assert '"sysctl"' in sec["print allproc.lh_first->p_comm"]
    assert '"sshd"' in sec["print allproc.lh_first->p_pptr->p_comm"]
    td = sec["print *allproc.lh_first->p_threads.tqh_first"]
    assert "td_tid = 100120" in td and 'td_name = "sysctl"' in td and "td_oncpu = 1" in td
    assert "= 812" in sec["print allproc.lh_first->p_threads.tqh_first->td_proc->p_pid"]
    mb = sec["print *msgbufp"]
    assert "msg_magic = 405602" in mb and "msg_size = 4000" in mb
    assert '"page fault"' in sec["print panicstr"]
    assert "struct pcb *td_pcb;" in sec["ptype struct thread"]
    assert "= 100" in sec["print hz"]


def test_run_sh_from_clean_copy(tmp_path):
    if not KVM_DBG.exists():
        pytest.skip(f"{KVM_DBG} is not installed (pip install -e .)")
    if not shutil.which("gdb"):
        pytest.skip("gdb is not installed")
    ex = tmp_path / "examples"
    ex.mkdir()
    for name in ("run.sh", "kernel.gz", "vmcore.0.gz"):
        shutil.copy2(EXAMPLES / name, ex / name)
    env = dict(os.environ, KVM_DBG=str(KVM_DBG), KVM_GDB_PLUGIN=str(PLUGIN))
    p = subprocess.run(["bash", str(ex / "run.sh")], capture_output=True, text=True,
                       env=env, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert (ex / "work" / "kernel").exists() and (ex / "work" / "vmcore.0").exists()
    assert "$ kvm-dbg triage work/kernel work/vmcore.0" in out
    assert "crashed:   (pid 812) sysctl (crashed) (tid 100120)" in out
    for cmd in ("(gdb) kvm-open work/kernel work/vmcore.0", "(gdb) info threads", "(gdb) bt",
                "(gdb) print *$td"):
        assert cmd in out
    assert "#8  0xffffffff8024085a in strlen ()" in out
    assert "td_tid = 100120," in out and 'td_name = "sysctl"' in out
    assert "tf_trapno = 0xc" in out
    assert "Error" not in out and "Traceback" not in out


def test_rebuild(tmp_path, example):
    """examples/build.py into a temp dir: byte-identical with the same gcc, else at
    least a kernel that matches the dump."""
    if not (shutil.which(os.environ.get("CC", "gcc")) and shutil.which("ld")):
        pytest.skip("gcc/ld are not installed: cannot rebuild the example")
    p = subprocess.run([sys.executable, str(EXAMPLES / "build.py"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "vmcore.0.gz").read_bytes() == (EXAMPLES / "vmcore.0.gz").read_bytes()
    kernel = tmp_path / "kernel"
    with gzip.open(tmp_path / "kernel.gz") as src, open(kernel, "wb") as dst:
        shutil.copyfileobj(src, dst)
    if _producer(kernel) == _producer(example / "kernel"):
        assert (tmp_path / "kernel.gz").read_bytes() == (EXAMPLES / "kernel.gz").read_bytes()
    with kvm_dbg.open(str(kernel), str(example / "vmcore.0")) as kd:
        assert kd.panic_info().version_mismatch is False
        assert [f.function for f in kd.threads()[0].frames()] == CRASH_STACK
