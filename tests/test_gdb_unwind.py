"""gdb's backtraces through the kvm_dbg frame unwinder, on the real dumps."""

from __future__ import annotations

import re

import pytest
from realdumps import real_dump_factory  # noqa: F401 (fixture)
from test_gdb_plugin import Gdb, _gdb_for

from kvm_dbg.kstate.unwind import caller_registers

pytest.importorskip("pexpect")

FRAME = re.compile(r"^#(\d+)\s+(0x[0-9a-f]+)", re.M)


def _bt_pcs(g: Gdb) -> list:
    out = g.cmd("bt")
    assert "Python Exception" not in out and "Traceback" not in out, out
    return [int(pc, 16) for _, pc in FRAME.findall(out)]


@pytest.mark.parametrize("name,full", [("vmcore-amd64-full", True),
                                       ("vmcore-amd64-minidump", True),
                                       ("vmcore-i386-minidump", True),
                                       ("vmcore-arm64-minidump", False)])
def test_bt_matches_expected(real_dump_factory, name, full):  # noqa: F811
    dump = real_dump_factory(name)
    exe = _gdb_for(dump.arch)
    if not exe:
        pytest.skip(f"no gdb able to debug {dump.arch}")
    g = Gdb(exe)
    try:
        out = g.cmd(f"kvm-open {dump.kernel} {dump.core}")
        assert "kvm-open:" not in out, out
        for pos, t in sorted(dump.expected["threads"].items()):
            g.cmd(f"thread {int(pos) + 1}")
            want = [int(pc, 16) for pc in t["backtrace_pcs"]]
            got = _bt_pcs(g)
            if full:
                assert got == want, (pos, [hex(p) for p in got])
            else:
                assert got[:1] == want[:1], (pos, [hex(p) for p in got])
        if full:  # frame selection and caller registers through the unwinder
            g.cmd("thread 1")
            out = g.cmd("frame 1")
            assert re.search(r"^#1\s+0x", out, re.M), out
            pc = g.cmd("p/x $pc").strip().split()[-1]
            assert int(pc, 16) == int(dump.expected["threads"]["0"]["backtrace_pcs"][1], 16)
        g.cmd("kvm-close")
    finally:
        g.quit()


def test_caller_registers_amd64_chain():
    # frame record at fp: [fp] = saved fp, [fp+8] = return address
    def q(v: int) -> bytes:
        return v.to_bytes(8, "little")

    mem = {0x1000: q(0x1100), 0x1008: q(0xffffffff80001234), 0x1100: q(0x1200), 0x1108: q(0)}

    def read(addr: int, n: int):
        return mem.get(addr, b"")[:n] or None

    regs = {"rip": 0xffffffff80000010, "rsp": 0xff0, "rbp": 0x1000}
    caller = caller_registers("amd64", regs, read)
    assert caller == {"rip": 0xffffffff80001234, "rsp": 0x1010, "rbp": 0x1100}
    assert caller_registers("amd64", caller, read, depth=1) is None  # zero return address
    assert caller_registers("amd64", {"rsp": 1}, read) is None
    assert caller_registers("nonesuch", regs, read) is None
    with pytest.raises(ZeroDivisionError):  # a reader's own failure is not "end of stack"
        caller_registers("amd64", regs, lambda a, n: 1 / 0)


def test_caller_registers_amd64_trapframe():
    sp = 0x2000
    frame = bytearray(192)
    for off, value in ((64, 0x3000), (152, 0xffffffff80005555), (176, 0x2800), (160, 0x20)):
        frame[off:off + 8] = value.to_bytes(8, "little")

    def read(addr: int, n: int):
        return bytes(frame[addr - sp:addr - sp + n]) if sp <= addr < sp + 192 else None

    def function_at(pc: int):
        return ("calltrap", 0xffffffff80000100) if pc >= 0xffffffff80000100 else None

    regs = {"rip": 0xffffffff80000108, "rsp": sp, "rbp": 0x1000}
    caller = caller_registers("amd64", regs, read, depth=1, function_at=function_at)
    assert caller is not None
    assert (caller["rip"], caller["rsp"], caller["rbp"], caller["cs"]) == \
        (0xffffffff80005555, 0x2800, 0x3000, 0x20)
