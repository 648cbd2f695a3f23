"""kvm_dbg.drgn: drgn programs over our reader, on fixtures of every architecture, the
DWARF dumps (the bundled example of every architecture), a gcc-built module, and without drgn."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import drgn  # noqa: E402  (the test extra installs drgn: CI must fail without it)
import pytest
from dwarfdumps import DWARF_DUMPS, dwarf_dump, dwarf_dump_factory  # noqa: F401
from elftools.elf.elffile import ELFFile

import kvm_dbg
from kvm_dbg import drgn as kdrgn
from kvm_dbg.errors import KvmError

ROOT = Path(__file__).resolve().parents[1]
#: kvm_dbg arch -> drgn Architecture name, and a fixture of it (fmt, version, options).
ARCHES = {
    "amd64": ("X86_64", ("minidump", 3, {})), "i386": ("I386", ("minidump", 2, {"pae": True})),
    "arm64": ("AARCH64", ("minidump", 2, {})), "arm": ("ARM", ("minidump", 0, {})),
    "riscv": ("RISCV64", ("minidump", 0, {})),
    "powerpc64": ("PPC64", ("minidump", 2, {"mmu": "mmu_radix", "endian": "le"})),
    "powerpc": ("UNKNOWN", ("elf", 0, {"kdh": True})), "mips": ("UNKNOWN", ("minidump", 0, {})),
}
#: Hides drgn from the interpreter that runs kvm-dbg (as if it were not installed).
NO_DRGN = textwrap.dedent("""
    import importlib.abc, sys
    class _Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "drgn" or name.startswith("drgn.") or name == "_drgn":
                raise ImportError("No module named " + repr(name))
    sys.meta_path.insert(0, _Hide())
    from kvm_dbg.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_platform_table_is_complete():
    assert set(kdrgn.PLATFORMS) == set(ARCHES)
    assert {a for a, v in kdrgn.PLATFORMS.items() if v is None} == {"powerpc", "mips"}


@pytest.mark.parametrize("arch", sorted(ARCHES))
def test_program_reads_memory_of_every_architecture(tmp_path, arch):
    """The Program's memory is our reader: every probe of the fixture manifest reads
    back, every hole is a FaultError at its address; platform flags from the dump."""
    from fixturegen import build
    name, (fmt, version, opts) = ARCHES[arch]
    fx = build(arch, fmt, version, str(tmp_path), **opts)
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        prog = kdrgn.program_for(kd)
        assert prog.platform.arch == getattr(drgn.Architecture, name)
        flags = prog.platform.flags
        assert bool(flags & drgn.PlatformFlags.IS_64_BIT) == (kd.ptrsize == 8)
        assert bool(flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN) == (kd.byteorder == "little")
        assert fx.manifest.probes and fx.manifest.holes
        for p in fx.manifest.probes[:40]:
            assert prog.read(p.va, len(p.data)) == p.data, (p.kind, hex(p.va))
        for h in fx.manifest.holes[:20]:
            with pytest.raises(drgn.FaultError) as e:
                prog.read(h.va, h.size)
            assert h.va <= e.value.address < h.va + h.size, (h.kind, hex(h.va))
        # kernel symbols come from the kernel file through drgn's module
        hz = prog.symbol("hz")
        assert hz.address == fx.manifest.hz_addr
        assert int.from_bytes(prog.read(hz.address, 4), kd.byteorder) == fx.manifest.hz_value
        assert kdrgn.has_debug_info(prog) is False


def test_program_typed_objects(dwarf_dump):  # noqa: F811
    d, k = dwarf_dump, dwarf_dump.kstate
    prog = kdrgn.program(d.kernel, d.core)
    try:
        assert kdrgn.has_debug_info(prog) and kdrgn.modules(prog)["kernel"] == d.kernel
        pids, p = [], prog["allproc"].lh_first
        while p:
            pids.append(p.p_pid.value_())
            p = p.p_list.le_next
        assert pids == [pr.pid for pr in k.procs]
        mb = prog["msgbufp"]
        assert mb.msg_size.value_() == k.msgbuf_size and mb.msg_wseq.value_() == k.msgbuf_wseq
        assert prog["hostname"].string_().decode() == k.hostname
        assert prog.symbol("doadump").address == k.functions["doadump"][0]
        with pytest.raises(drgn.FaultError):
            prog.read(0x10, 8)
    finally:
        kdrgn.close(prog)
    assert kvm_dbg.drgn.kvm(prog).closed


#: Where drgn 0.3.0 builds a stack trace from pcs (elsewhere it says it cannot).
DRGN_STACK_TRACES = ("amd64", "arm64", "arm", "powerpc64")


def test_stack_traces_from_our_unwinder(dwarf_dump):  # noqa: F811
    """Every thread's drgn StackTrace has the generator's functions in order (through
    trap frames), whether the thread is given as a KThread, a tid or an Object."""
    d, k = dwarf_dump, dwarf_dump.kstate
    prog = kdrgn.program(d.kernel, d.core)
    for t in kdrgn.threads(prog):
        exp = k.thread(t.tid)
        for handle in (t, t.tid, kdrgn.thread_object(prog, t)):
            if d.arch not in DRGN_STACK_TRACES:
                with pytest.raises(KvmError, match=r"^drgn: stack traces are not supported"):
                    kdrgn.stack_trace(prog, handle)
                continue
            trace = kdrgn.stack_trace(prog, handle)
            assert [f.name for f in trace] == exp.functions, t.name
            mask = (1 << 8 * kdrgn.kvm(prog).ptrsize) - 1     # drgn's pcs: link addresses
            assert [f.pc for f in trace] == [(pc - k.kerndisp) & mask for pc in exp.backtrace]
    crashed = kdrgn.crashed_thread(prog)
    assert crashed.tid == k.dumptid
    with pytest.raises(LookupError):
        kdrgn.find_thread(prog, 4242)


def _printed_fields(text: str) -> dict:
    """``.name = (type)value`` lines of drgn's struct printing, top level only."""
    out = {}
    for m in re.finditer(r"^\t\.(\w+) = \(([^)]*)\)(.*?),?$", text, re.M):
        out[m.group(1)] = m.group(3)
    return out


def test_curthread_printed_by_drgn_matches_kstate(dwarf_dump):  # noqa: F811
    """drgn's own printing of ``*curthread`` (the crashed CPU's pc_curthread) shows
    what kvm_dbg's kstate knows about that thread, and every thread likewise."""
    d, k = dwarf_dump, dwarf_dump.kstate
    prog = kdrgn.program(d.kernel, d.core)
    crashed = kdrgn.crashed_thread(prog)
    curthread = prog["cpuid_to_pcpu"][crashed.oncpu].pc_curthread
    assert curthread.value_() == crashed.td_addr == d.vm.curthread[crashed.oncpu]
    for t in kdrgn.threads(prog):
        obj = curthread if t is crashed else kdrgn.thread_object(prog, t)
        fields = _printed_fields(str(obj[0]))
        assert int(fields["td_tid"]) == t.tid
        assert fields["td_name"] == f'"{t.tdname}"'
        assert int(fields["td_oncpu"]) == (-1 if t.oncpu is None else t.oncpu)
        exp = k.thread(t.tid)
        if exp.pcb_source == "td_pcb":
            assert int(fields["td_pcb"], 16) == t.pcb_addr == exp.pcb_addr


GCC_MODULE = """
int kvmgcc_counter = 5;
struct kvmgcc_state { long calls; char name[16]; } kvmgcc_state;
int kvmgcc_fn(int x) { return x + kvmgcc_counter; }
"""


def test_module_debug_info_at_kgdb_section_addresses(tmp_path):
    """A loaded module's file (found as kgdb finds it) becomes a drgn module: its
    symbols and DWARF variables at the section addresses kgdb computes."""
    from fixturegen import build
    from fixturegen.kernelstate import KldSpec, default_spec

    from kvm_dbg.kstate.klds import section_addresses
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed (scripts/bootstrap.sh installs it)"
    mods = [KldSpec("kvmgcc.ko", "/boot/modules/kvmgcc.ko"), KldSpec("absent.ko", None)]
    fx = build("amd64", "minidump", 3, str(tmp_path), kstate=default_spec("amd64", klds=mods))
    (tmp_path / "m.c").write_text(GCC_MODULE)
    ko = tmp_path / "kvmgcc.ko"
    subprocess.run([gcc, "-c", "-g", "-O0", "-fno-pic", "-o", str(ko), str(tmp_path / "m.c")],
                   check=True)
    base = next(k.address for k in fx.manifest.kstate.klds if k.name == "kvmgcc.ko")
    secs = section_addresses(str(ko), base)
    with open(ko, "rb") as f:
        elf = ELFFile(f)
        syms = {s.name: (elf.get_section(s["st_shndx"]).name, s["st_value"])
                for s in elf.get_section_by_name(".symtab").iter_symbols()
                if s.name.startswith("kvmgcc_")}
    prog = kdrgn.program(fx.kernel_path, fx.core_path)
    mods_seen = kdrgn.modules(prog)
    assert mods_seen["kvmgcc.ko"] == str(ko)
    assert mods_seen["absent.ko"].startswith("(no file: absent.ko: Unable to locate kld")
    sec, off = syms["kvmgcc_fn"]
    assert prog.symbol("kvmgcc_fn").address == secs[sec] + off
    for var in ("kvmgcc_counter", "kvmgcc_state"):
        sec, off = syms[var]
        obj = prog.object(var)
        assert obj.address_ == secs[sec] + off
    assert prog.object("kvmgcc_state").type_.type_name() == "struct kvmgcc_state"
    assert prog.type("struct kvmgcc_state").size == 24


def _run_without_drgn(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", NO_DRGN, *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_without_drgn_everything_else_works(example):
    """drgn hidden: crashinfo still prints the kstate sections, the drgn sections
    say how to install it, and asking for drgn fails with that message."""
    k, c = str(example / "kernel"), str(example / "vmcore.0")
    r = _run_without_drgn("crashinfo", k, c)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "panic: page fault" in out and "Tracing command sysctl pid 812 tid 100120" in out
    assert re.search(r"^\s+812\s+705\s+PRS_NORMAL", out, re.M)           # ps
    assert "Fatal trap 12: page fault while in kernel mode" in out       # dmesg
    hint = "pip install 'kvm-dbg[drgn]'"
    for title in ("vmstat -s", "vmstat -m", "vmstat -z", "vmstat -i", "pstat -T",
                  "kernel config", "ddb capture buffer"):
        body = out.split(f"\n{title}\n", 1)[1].split("\n---", 1)[0]
        assert "not available: needs drgn: drgn is not installed" in body and hint in body
    r = _run_without_drgn("drgn", k, c)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().startswith("kvm-dbg: drgn is not installed") and hint in r.stderr
    r = _run_without_drgn("triage", k, c)
    assert r.returncode == 0 and "crashed:   (pid 812) sysctl (crashed)" in r.stdout


def test_too_old_drgn_is_refused(tmp_path, example):
    """A drgn older than 0.3.0 (Debian's python3-drgn is 0.0.22) is refused by name."""
    fake = tmp_path / "drgn"
    fake.mkdir()
    (fake / "__init__.py").write_text("__version__ = '0.0.22'\nclass Program: pass\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    r = subprocess.run([sys.executable, "-m", "kvm_dbg.cli", "drgn", str(example / "kernel"),
                        str(example / "vmcore.0")], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 1
    assert "drgn 0.0.22" in r.stderr and "is too old" in r.stderr and "0.3.0" in r.stderr


def test_cli_script_mode(tmp_path, example):
    script = tmp_path / "s.py"
    script.write_text(textwrap.dedent("""
        import sys
        print("argv", sys.argv[1:])
        print("first", prog["allproc"].lh_first.p_comm.string_().decode())
        print("thread", thread.tid, curthread.td_name.string_().decode())
        print("procs", [p.p_pid.value_() for p in for_each_proc(prog)])
        print("bt", [f.name for f in stack_trace(thread)][:3])
    """))
    r = subprocess.run([sys.executable, "-m", "kvm_dbg.cli", "drgn", str(example / "kernel"),
                        str(example / "vmcore.0"), str(script), "--", "-x", "y"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "argv ['-x', 'y']" in r.stdout
    assert "first sysctl" in r.stdout and "thread 100120 sysctl" in r.stdout
    assert "procs [812, 705, 16, 12, 11, 1, 0]" in r.stdout
    assert "bt ['doadump', 'kern_reboot', 'vpanic']" in r.stdout
    crashdir = tmp_path / "crash"                  # -n N --crashdir DIR: kernel.N found
    crashdir.mkdir()
    shutil.copy(example / "vmcore.0", crashdir / "vmcore.0")
    shutil.copy(example / "kernel", crashdir / "kernel.0")
    r = subprocess.run([sys.executable, "-m", "kvm_dbg.cli", "drgn", "-n", "0", "--crashdir",
                        str(crashdir), str(script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "thread 100120 sysctl" in r.stdout, r.stderr


def test_cli_interactive_shell(example):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "kvm_dbg.cli", "drgn", str(example / "kernel"),
                                           str(example / "vmcore.0")],
                          encoding="utf-8", timeout=60, env=dict(os.environ, TERM="dumb"))
    try:
        child.expect("FreeBSD helpers:")
        child.expect(">>> ")
        child.sendline("curthread.td_tid")
        child.expect(r"\(lwpid_t\)100120")
        child.expect(">>> ")
        child.sendline("pfind(prog, 705).p_comm")
        child.expect('"sshd"')
        child.expect(">>> ")
        child.sendline("exit()")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
