"""Structure layouts from the kernel's DWARF (kvm_dbg.kstate.dwarf): ps fields on
the bundled example, offsets when the offset symbols are missing, the forms
gcc writes, and no DWARF work when nothing is missing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from fixturegen.example import PARENTS, PRS_NORMAL, PRS_ZOMBIE, example_spec
from kldwarn import other_warnings

import kvm_dbg
from kvm_dbg.kstate import dwarf, offsets
from kvm_dbg.rsp import monitor

ROOT = Path(__file__).resolve().parents[1]
OFFSET_SYMBOLS = ([f"proc_off_{f}" for f in offsets.PROC_FIELDS]
                  + [f"thread_off_{f}" for f in offsets.THREAD_FIELDS]
                  + [f"kld_off_{f}" for f in offsets.KLD_FIELDS] + ["pcb_size"])
STATE_NAMES = {PRS_NORMAL: "PRS_NORMAL", PRS_ZOMBIE: "PRS_ZOMBIE"}


def _objcopy(args, src: Path, dst: Path) -> None:
    tool = shutil.which("objcopy") or shutil.which("llvm-objcopy")
    if tool is None:
        pytest.skip("objcopy not installed")
    subprocess.run([tool, *args, str(src), str(dst)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def no_offsets(example) -> Path:
    """The example kernel without the offset symbols (as before FreeBSD 10.3)."""
    out = example / "kernel.nooffs"
    _objcopy([f"--strip-symbol={s}" for s in OFFSET_SYMBOLS], example / "kernel", out)
    return out


def _snapshot(kernel: Path, core: Path):
    with kvm_dbg.open(str(kernel), str(core)) as kd:
        ths = [(t.tid, t.pid, t.name, t.crashed, t.oncpu, t.registers, t.pcb_addr,
                [f.function for f in t.frames()]) for t in kd.threads()]
        ps = [(p.pid, p.ppid, p.state, p.comm, p.tids) for p in kd.procs()]
        kl = [(k.name, k.path, k.address) for k in kd.klds()]
        return ths, ps, kl, other_warnings(kd.warnings)


def test_example_ps_fields_match_spec(example):
    spec = {p.pid: p for p in example_spec().procs}
    with kvm_dbg.open(str(example / "kernel"), str(example / "vmcore.0")) as kd:
        ps = kd.procs()
        assert other_warnings(kd.warnings) == []
    assert sorted(p.pid for p in ps) == sorted(spec)
    for p in ps:
        assert p.ppid == PARENTS.get(p.pid), p
        assert p.state == STATE_NAMES[PRS_ZOMBIE if spec[p.pid].zombie else PRS_NORMAL]
        assert p.comm == spec[p.pid].comm
        assert p.tids == [t.tid for t in spec[p.pid].threads]


def test_dwarf_offsets_equal_the_symbols(example):
    """Every exported offset and pcb_size agree with DWARF."""
    with kvm_dbg.open(str(example / "kernel"), str(example / "vmcore.0")) as kd:
        for prefix, (struct, paths) in offsets.DWARF_STRUCTS.items():
            fields = [s[len(prefix):] for s in OFFSET_SYMBOLS if s.startswith(prefix)]
            from_syms = offsets.read_offsets(kd, prefix, fields)
            assert None not in from_syms.values()
            assert offsets.dwarf_offsets(kd, struct, fields, paths) == from_syms
        pcb = dwarf.struct_layout(kd, "pcb")
        assert pcb is not None and pcb.size == offsets.pcb_size(kd) == 0x1C0
        proc = dwarf.struct_layout(kd, "proc")
        assert proc is not None and proc.size == 0x4B8
        assert proc.member("p_state").enum == {0: "PRS_NEW", 1: "PRS_NORMAL", 2: "PRS_ZOMBIE"}
        assert proc.member("p_comm").size == 20 and proc.member("p_pptr").size == 8
        assert proc.offset("p_slock.lock_object.lo_flags") == 0x20 + 8
        assert proc.member("nosuch") is None and proc.member("p_pid.x") is None


def test_missing_offset_symbols_come_from_dwarf(example, no_offsets):
    core = example / "vmcore.0"
    with kvm_dbg.open(str(no_offsets), str(core)) as kd:
        assert all(kd.lookup(s) is None for s in OFFSET_SYMBOLS)
    want = _snapshot(example / "kernel", core)
    got = _snapshot(no_offsets, core)
    assert len(got[0]) == 9 and got[0][0][2] == "(pid 812) sysctl (crashed)"
    assert got == want
    assert got[3] == []


def test_without_dwarf_or_symbols_nothing_is_listed(example, tmp_path):
    bare = tmp_path / "kernel.bare"
    _objcopy(["--strip-debug"] + [f"--strip-symbol={s}" for s in OFFSET_SYMBOLS],
             example / "kernel", bare)
    with kvm_dbg.open(str(bare), str(example / "vmcore.0")) as kd:
        assert kd.threads() == [] and kd.klds() == []
        assert any("cannot enumerate threads: missing" in w for w in kd.warnings)
        ps = kd.procs()
    assert ps == []
    assert dwarf.load(str(bare)).has_dwarf is False


def test_no_dwarf_work_when_symbols_are_present(example, monkeypatch):
    """threads() and klds() never open DWARF when the offset symbols exist;
    procs() does (p_pptr/p_state), once per kernel."""
    calls = []
    real = dwarf.KernelDwarf.layouts

    def spy(self, names):
        calls.append(list(names))
        return real(self, names)

    monkeypatch.setattr(dwarf.KernelDwarf, "layouts", spy)
    with kvm_dbg.open(str(example / "kernel"), str(example / "vmcore.0")) as kd:
        kd.threads()
        kd.klds()
        assert calls == []
        kd.procs()
        assert calls == [["proc"]]


def test_ps_columns(example):
    out = subprocess.run([sys.executable, "-m", "kvm_dbg.cli", "ps", str(example / "kernel"),
                          str(example / "vmcore.0")], capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    assert out[0].split() == ["PID", "PPID", "STATE", "THR", "ADDRESS", "COMM"]
    rows = {int(line.split()[0]): line.split() for line in out[1:]}
    assert rows[812][1:3] == ["705", "PRS_NORMAL"] and rows[0][1] == "-"
    with kvm_dbg.open(str(example / "kernel"), str(example / "vmcore.0")) as kd:
        text = monitor.cmd_ps(SimpleNamespace(kvm=kd), [])
    rows = {int(line.split()[0]): line.split() for line in text.splitlines()[1:]}
    assert rows[705][1:3] == ["1", "PRS_NORMAL"] and rows[0][-1] == "kernel"


def test_budget_exhausted_warns(example):
    kd = dwarf.KernelDwarf(str(example / "kernel"), budget=1e-9)
    kd._candidates = lambda want: None          # force the unfiltered scan
    assert kd.layout("nosuch") is None
    assert kd.stats["method"] == "scan"
    assert any("gave up looking for struct nosuch" in w for w in kd.warnings)
    assert kd.layout("nosuch") is None          # cached: no second search
    fresh = dwarf.KernelDwarf(str(example / "kernel"))
    assert fresh.layout("nosuch") is None and other_warnings(fresh.warnings) == []


def test_unreadable_kernel_file(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + b"\xff" * 60)
    kd = dwarf.KernelDwarf(str(junk))
    assert kd.layout("proc") is None and kd.warnings
    assert dwarf.load(str(tmp_path / "missing")) is None
    assert dwarf.for_kvm(SimpleNamespace(kernel_path=None)) is None


SOURCE = r"""
typedef int pid_t;
typedef struct { void *a; long b; } anon_t;
enum states { S_A = 0, S_B = 5, S_C = -1 };
struct inner { char c; int i; };
struct proc {
    struct { struct proc *le_next; struct proc **le_prev; } p_list;
    pid_t p_pid;
    const volatile enum states p_state;
    unsigned p_flag : 3, p_flag2 : 7;
    union { long u_l; char u_c[3]; };
    struct { int anon_x; short anon_y; };
    struct inner p_inner[2][3];
    anon_t p_t;
    char p_comm[20];
    struct proc *p_pptr;
};
struct proc proc0;
"""


@pytest.mark.parametrize("version", ["2", "3", "4", "5"])
def test_gcc_member_forms(tmp_path, version):
    """DW_OP_plus_uconst blocks (DWARF 2/3), constants (4/5), bit-fields,
    anonymous members, typedefs, qualifiers, arrays and enums."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not installed")
    src, obj = tmp_path / "t.c", tmp_path / "t.o"
    src.write_text(SOURCE)
    subprocess.run([gcc, f"-gdwarf-{version}", "-O0", "-c", str(src), "-o", str(obj)],
                   check=True, capture_output=True)
    p = dwarf.KernelDwarf(str(obj)).layout("proc")
    assert p is not None and p.name == "proc"
    expect = {"p_list": (0, 16), "p_list.le_prev": (8, 8), "p_pid": (16, 4),
              "p_state": (20, 4), "u_l": (32, 8), "u_c": (32, 3), "anon_x": (40, 4),
              "anon_y": (44, 2), "p_inner": (48, 48), "p_t.b": (104, 8), "p_comm": (112, 20),
              "p_pptr": (136, 8)}
    for path, (off, size) in expect.items():
        m = p.member(path)
        assert m is not None and (m.offset, m.size) == (off, size), (path, m)
    assert p.member("p_state").enum[5] == "S_B"
    assert p.member("p_flag").offset == 24 and p.size == 144
