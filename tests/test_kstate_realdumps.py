"""kstate on the four real FreeBSD dumps against expected.json (LLDB's view)."""

from __future__ import annotations

import pytest
from kldwarn import other_warnings
from realdumps import REAL_DUMPS, real_dump_factory  # noqa: F401 (fixture)

import kvm_dbg
from kvm_dbg import kstate

#: Registers our PCB decode gives beyond LLDB's set: i386's PCB holds ebx
#: (LLDB does not map it); arm64's pc is pcb lr, which we also report as lr.
EXTRA_REGS = {"i386": {"ebx"}, "arm64": {"lr"}}


@pytest.fixture(params=REAL_DUMPS)
def opened(request, real_dump_factory):  # noqa: F811
    d = real_dump_factory(request.param)
    kvm = kvm_dbg.open(d.kernel, d.core)
    yield d, kvm
    kvm.close()


def test_thread_count(opened):
    d, kvm = opened
    assert len(kstate.threads(kvm)) == d.expected["numthread"]


def test_listed_threads(opened):
    d, kvm = opened
    threads = kstate.threads(kvm)
    assert threads[0].crashed
    for pos, exp in d.expected["threads"].items():
        t = threads[int(pos)]
        assert t.name == exp["name"]
        assert [f"0x{pc:x}" for pc in t.backtrace()] == \
            [f"0x{int(pc, 16):x}" for pc in exp["backtrace_pcs"]]
        want = {k: int(v, 16) for k, v in exp["registers"].items()}
        assert {k: t.registers.get(k) for k in want} == want
        assert set(t.registers) - set(want) <= EXTRA_REGS.get(d.arch, set())


def test_no_warnings_and_consistent_views(opened):
    d, kvm = opened
    threads = kstate.threads(kvm)
    procs = kstate.procs(kvm)
    assert sum(p.nthreads for p in procs) == len(threads)
    assert sorted(t.tid for t in threads) == sorted(tid for p in procs for tid in p.tids)
    crashed = threads[0]
    assert kstate.panic_info(kvm).dumptid == crashed.tid
    assert other_warnings(kvm.warnings) == []


def test_absent_features_are_empty(opened):
    _, kvm = opened
    # These kernels have no msgbufp and no linker_files; the msgbuf is zeroed.
    assert kstate.klds(kvm) == []
    mb = kstate.msgbuf(kvm)
    assert mb.text.strip("\0") == "" and mb.unread == "" and mb.unread_banner() == ""


def test_kvm_methods_forward(opened):
    _, kvm = opened
    assert [t.tid for t in kvm.threads()] == [t.tid for t in kstate.threads(kvm)]
