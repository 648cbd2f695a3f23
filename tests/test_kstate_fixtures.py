"""kvm_dbg's kernel state against generated dumps (fixturegen.kernelstate): threads,
registers, backtraces through trap frames, processes, msgbuf, klds, panic facts, and
corrupted structures (partial results + a warning, never an exception or a hang)."""

from __future__ import annotations

import signal
from contextlib import contextmanager

import pytest
from fixturegen import build
from fixturegen.example import build_example
from fixturegen.kernelstate import ELF_DUMP_AVAIL, UNREAD_HEADER, build_threads, default_spec
from kldwarn import other_warnings

import kvm_dbg

# (arch, dump version, osreldate, build options): eras and PCB/trapframe layouts.
CASES = {
    "amd64-14": ("amd64", 3, 1400097, {}),
    "amd64-12-zombproc-v1": ("amd64", 1, 1203000, {}),
    "amd64-13-v2": ("amd64", 2, 1300139, {}),
    "i386-14-pae": ("i386", 2, 1400097, {"pae": True}),
    "i386-12-classic-byvalue": ("i386", 1, 1203000, {"pae": False, "by_value": True}),
    "arm64-14-stoppcbs-ptr": ("arm64", 2, 1400097, {}),
    "arm64-14-array-16k": ("arm64", 3, 1400085, {"page_flag": 1}),
    "arm64-13-oldpcb": ("arm64", 1, 1300139, {}),
    "arm64-12-zombproc": ("arm64", 2, 1203000, {}),
}


@contextmanager
def time_limit(seconds: float):
    """Fail (instead of hanging) if the block runs longer than ``seconds``."""
    def _expired(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")
    old = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _make(tmp_path_factory, arch, version, osreldate, options, **spec_kw):
    opts = dict(options)
    by_value = opts.pop("by_value", False)
    spec = default_spec(arch, osreldate=osreldate, i386_trap_by_ref=not by_value, **spec_kw)
    fx = build(arch, "minidump", version, str(tmp_path_factory.mktemp(arch)), kstate=spec,
               **opts)
    return fx, kvm_dbg.open(fx.kernel_path, fx.core_path)


@pytest.fixture(scope="module", params=sorted(CASES))
def dump(request, tmp_path_factory):
    fx, kvm = _make(tmp_path_factory, *CASES[request.param])
    yield fx, fx.manifest.kstate, kvm
    kvm.close()


def test_threads_names_and_order(dump):
    _, exp, kvm = dump
    with time_limit(10):
        got = kvm.threads()
    assert [t.name for t in got] == [t.name for t in exp.threads]
    assert [(t.tid, t.pid, t.crashed, t.td_addr, t.proc_addr) for t in got] == \
        [(t.tid, t.pid, t.crashed, t.td_addr, t.proc_addr) for t in exp.threads]
    assert got[0].crashed and got[0].tid == exp.dumptid
    assert other_warnings(kvm.warnings) == []


def test_registers_from_the_right_pcb(dump):
    _, exp, kvm = dump
    for t, e in zip(kvm.threads(), exp.threads):
        assert {k: t.registers.get(k) for k in e.registers} == e.registers, \
            (t.name, e.pcb_source)
    sources = {e.pcb_source for e in exp.threads}
    assert sources == {"dumppcb", "stoppcbs", "td_pcb"}


def test_backtraces_through_trap_frames(dump):
    _, exp, kvm = dump
    ntrap = 0
    for t, e in zip(kvm.threads(), exp.threads):
        frames = t.frames()
        assert [f.pc for f in frames] == e.backtrace, t.name
        for k, regs in e.trapframes.items():
            assert {r: frames[k].regs.get(r) for r in regs} == regs, (t.name, k)
            ntrap += 1
    assert ntrap >= 2            # the crashed thread's calltrap + the stopped CPU's
    crashed = exp.threads[0]
    assert crashed.functions[0] == "doadump"
    assert any(f.startswith(("calltrap", "handle_el1h")) for f in crashed.functions)


def test_procs(dump):
    _, exp, kvm = dump
    got = kvm.procs()
    assert [(p.pid, p.comm, p.addr, p.tids) for p in got] == \
        [(p.pid, p.comm, p.addr, p.tids) for p in exp.procs]
    assert sum(p.nthreads for p in got) == len(exp.threads)


def test_zombies_by_era(dump):
    fx, exp, kvm = dump
    zombie = [p.pid for p in exp.procs if p.zombie]
    pids = [p.pid for p in kvm.procs()]
    assert zombie == [777] and 777 in pids
    if exp.osreldate < 1300000:          # allproc, then zombproc
        assert "zombproc" in exp.symbols and "pidhashtbl" not in exp.symbols
        assert pids[-1] == 777
    else:
        assert "zombproc" not in exp.symbols and "proc_off_p_hash" in exp.offsets


def test_msgbuf_wrapped(dump):
    _, exp, kvm = dump
    mb = kvm.msgbuf()
    assert mb.source == "msgbufp"
    assert mb.text == exp.msgbuf_text and mb.unread == exp.msgbuf_unread
    assert mb.wseq == exp.msgbuf_wseq > exp.msgbuf_size        # sequence beyond the size
    assert mb.rseq % mb.size > mb.wseq % mb.size                # unread part wraps
    assert mb.unread.rstrip().endswith("%..61%") and "panic: page fault" in mb.unread
    assert UNREAD_HEADER in mb.unread_banner()
    assert mb.dmesg()[-1] == exp.msgbuf_text.rstrip("\n").split("\n")[-1]


def test_klds_and_panic(dump):
    fx, exp, kvm = dump
    assert [(k.name, k.path, k.address, k.addr) for k in kvm.klds()] == \
        [(k.name, k.path, k.address, k.addr) for k in exp.klds]
    pi = kvm.panic_info()
    assert (pi.panicstr, pi.version, pi.file_version, pi.osrelease, pi.osreldate,
            pi.hostname, pi.dumptid) == (exp.panicstr, exp.version, exp.file_version,
                                         exp.osrelease, exp.osreldate, exp.hostname,
                                         exp.dumptid)
    assert pi.version_mismatch is False and other_warnings(kvm.warnings) == []


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_version_mismatch_warns(arch, tmp_path_factory):
    fx, kvm = _make(tmp_path_factory, arch, 0, 1400097, {}, version_mismatch=True)
    exp = fx.manifest.kstate
    pi = kvm.panic_info()
    assert exp.version_mismatch and pi.version_mismatch is True
    assert pi.file_version == exp.file_version != pi.version
    assert any("version" in w for w in kvm.warnings)


# ------------------------------------------------------------------- corruption

STRICT = ("proc_loop", "allproc_cut", "thread_hole", "offset_garbage", "kld_loop")


@pytest.mark.parametrize("arch,osreldate", [("amd64", 1400097), ("i386", 1203000),
                                            ("arm64", 1300139)])
@pytest.mark.parametrize("corrupt", ["proc_loop", "allproc_cut", "thread_hole",
                                     "offset_garbage", "msgbuf_indices", "msgbuf_size",
                                     "kld_loop"])
def test_corrupted(arch, osreldate, corrupt, tmp_path_factory):
    fx, kvm = _make(tmp_path_factory, arch, 0, osreldate, {}, corrupt=[corrupt])
    exp = fx.manifest.kstate
    with time_limit(10):
        threads, procs = kvm.threads(), kvm.procs()
        mb, klds, _ = kvm.msgbuf(), kvm.klds(), kvm.panic_info()
        bts = [t.backtrace() for t in threads]
    assert kvm.warnings, corrupt
    assert isinstance(mb.text, str) and isinstance(mb.unread, str)
    if corrupt in STRICT:       # the well-defined partial result
        assert [t.name for t in threads] == [t.name for t in exp.threads]
        assert [(p.pid, p.tids) for p in procs] == [(p.pid, p.tids) for p in exp.procs]
        assert [k.name for k in klds] == [k.name for k in exp.klds]
        for t, e, bt in zip(threads, exp.threads, bts):
            assert bool(t.registers) == bool(e.registers), t.name
            assert {k: t.registers.get(k) for k in e.registers} == e.registers
            assert bt == e.backtrace
    if corrupt == "allproc_cut" and osreldate >= 1300000:
        # allproc ends in a hole after two entries: the pid hash finds the rest,
        # including pid 63 in the last bucket (pidhash is a mask).
        assert len(procs) == 10 and 63 in {p.pid for p in procs}


@pytest.mark.parametrize("arch", ["amd64", "i386"])
def test_elf_core(arch, tmp_path):
    """Full (ELF) cores: the same kernel state through the page tables."""
    fx = build(arch, "elf", 0, str(tmp_path), kstate=default_spec(arch),
               dump_avail=ELF_DUMP_AVAIL)
    exp = fx.manifest.kstate
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kvm:
        ts = kvm.threads()
        assert [(t.name, t.backtrace()) for t in ts] == \
            [(t.name, t.backtrace) for t in exp.threads]
        assert kvm.msgbuf().unread == exp.msgbuf_unread and other_warnings(kvm.warnings) == []


@pytest.mark.parametrize("arch,ncpu,cpu", [("amd64", 128, 100), ("i386", 32, 31),
                                           ("arm64", 96, 65)])
def test_high_cpu_numbers(arch, ncpu, cpu, tmp_path_factory):
    """stopped_cpus is an array of longs: CPU ``cpu`` may sit in a later long."""
    spec = default_spec(arch, ncpu=ncpu)
    idle = next(p for p in spec.procs if p.comm == "idle")
    idle.threads[0].oncpu = cpu
    fx = build(arch, "minidump", 0, str(tmp_path_factory.mktemp(arch)), kstate=spec)
    exp = fx.manifest.kstate
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kvm:
        t = next(t for t in kvm.threads() if t.tid == idle.threads[0].tid)
        e = exp.thread(t.tid)
        assert e.pcb_source == "stoppcbs" and t.name.endswith(f"(on CPU {cpu})")
        assert {k: t.registers.get(k) for k in e.registers} == e.registers
        assert t.backtrace() == e.backtrace


# --------------------------------------------------------------- large and example

def test_build_threads_small(tmp_path):
    fx = build_threads(str(tmp_path), nthreads=64, arch="amd64")
    exp = fx.manifest.kstate
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kvm:
        ts = kvm.threads()
        assert len(ts) == 64 and all(t.registers for t in ts)
        assert [t.name for t in ts] == [t.name for t in exp.threads]
        assert [t.backtrace() for t in ts[:8]] == [t.backtrace for t in exp.threads[:8]]


def test_example_dump(tmp_path):
    fx = build_example(str(tmp_path))
    exp = fx.manifest.kstate
    assert (fx.arch, fx.fmt, fx.version) == ("amd64", "minidump", 3)
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kvm:
        ts = kvm.threads()
        assert ts[0].name == "(pid 812) sysctl (crashed)"
        assert 5 <= len(kvm.procs()) <= 8
        assert [t.name for t in ts] == [t.name for t in exp.threads]
        assert ts[0].backtrace() == exp.threads[0].backtrace
        (k, regs), = exp.threads[0].trapframes.items()
        assert {r: ts[0].frames()[k].regs.get(r) for r in regs} == regs
        mb = kvm.msgbuf()
        assert mb.text == exp.msgbuf_text and mb.wseq > mb.size
        assert "panic: page fault" in mb.unread and mb.text.endswith(mb.unread)
        assert [k.name for k in kvm.klds()] == ["zfs.ko", "linux64.ko"]
        assert kvm.panic_info().panicstr == "page fault"
        assert other_warnings(kvm.warnings) == []
