"""Per-architecture PCB decoding: the offsets of threads.md §5, written out
literally here so the data tables are checked against the spec."""

from __future__ import annotations

import pytest
from fakedump import PROC_OFFS, THREAD_OFFS, FakeDump, FakeKernel

from kvm_dbg.kstate import threads

# arch -> (register width, {offset: register}, aliases expected in the result)
SPEC = {
    "amd64": (8, {0: "r15", 8: "r14", 16: "r13", 24: "r12", 32: "rbp", 40: "rsp",
                  48: "rbx", 56: "rip"}, {}),
    "i386": (4, {0: "edi", 4: "esi", 8: "ebp", 12: "esp", 16: "ebx", 20: "eip"}, {}),
    "arm": (4, {0: "r4", 4: "r5", 8: "r6", 12: "r7", 16: "r8", 20: "r9", 24: "r10",
                28: "r11", 32: "r12", 36: "sp", 40: "lr", 44: "pc"}, {}),
    "riscv": (8, {0: "ra", 8: "sp", 16: "gp", 24: "tp", 32: "fp",
                  **{32 + 8 * i: f"s{i}" for i in range(1, 12)}}, {"pc": "ra"}),
    "powerpc64": (8, {**{8 * i: f"r{12 + i}" for i in range(20)}, 160: "cr", 168: "r1",
                      176: "r2", 184: "lr"}, {"pc": "lr"}),
    "powerpc": (4, {**{4 * i: f"r{12 + i}" for i in range(20)}, 80: "cr", 84: "r1",
                    92: "lr"}, {"pc": "lr"}),
}
ARM64_NEW = {**{8 * i: f"x{19 + i}" for i in range(10)}, 80: "fp", 88: "lr", 96: "sp"}
ARM64_OLD = {**{8 * i: f"x{i}" for i in range(29)}, 232: "fp", 240: "lr", 256: "sp"}


def crashed_regs(arch: str, slots: dict, width: int, osreldate=None, values=None):
    kvm = FakeDump(arch)
    k = FakeKernel(kvm)
    if osreldate is not None:
        k.global_("osreldate", 4)
        kvm.put_int(kvm.syms["osreldate"], osreldate, 4)
    k.add_proc(7, "proc", [(100007, "proc", -1, {})])
    k.crash(100007, {})
    base = kvm.syms["dumppcb"]
    values = values or {off: 0x1000 + off for off in slots}
    for off, value in values.items():
        kvm.put_int(base + off, value, width)
    (t,) = threads(kvm)
    return t.registers, values


@pytest.mark.parametrize("arch", sorted(SPEC))
def test_pcb_layout(arch):
    width, slots, aliases = SPEC[arch]
    regs, values = crashed_regs(arch, slots, width)
    want = {name: values[off] for off, name in slots.items()}
    for alias, src in aliases.items():
        want[alias] = want[src]
    assert regs == want


def test_powerpc_is_big_endian():
    regs, _ = crashed_regs("powerpc64", {184: "lr"}, 8, values={184: 0xC000000000123456})
    assert regs["pc"] == 0xC000000000123456


@pytest.mark.parametrize("osreldate,slots", [(1400084, ARM64_NEW), (1300139, ARM64_OLD)])
def test_arm64_layout_by_osreldate(osreldate, slots):
    regs, values = crashed_regs("arm64", slots, 8, osreldate)
    want = {name: values[off] for off, name in slots.items()}
    want["pc"] = want["lr"]
    assert regs == want


def test_arm64_layout_probe_without_osreldate():
    # Old layout with kernel-looking lr/sp; the new slots hold small numbers.
    values = {off: 0x10 + off for off in ARM64_OLD}
    values[240] = 0xFFFF0000004B6E78
    values[256] = 0xFFFF0000D58F23B0
    regs, _ = crashed_regs("arm64", ARM64_OLD, 8, None, values)
    assert regs["pc"] == 0xFFFF0000004B6E78 and regs["sp"] == 0xFFFF0000D58F23B0
    assert regs["x0"] == 0x10
    # ...and a new-layout PCB is recognised as such.
    values = {off: 0x10 + off for off in ARM64_NEW}
    values[88] = 0xFFFF000000811370
    values[96] = 0xFFFF0000853A35C0
    regs, _ = crashed_regs("arm64", ARM64_NEW, 8, None, values)
    assert regs["pc"] == 0xFFFF000000811370 and "x0" not in regs


def test_i386_old_layout_before_1001505():
    regs, values = crashed_regs("i386", {4: "edi", 24: "eip"}, 4, 1000000)
    assert regs["edi"] == values[4] and regs["eip"] == values[24]


# sys/mips/include/pcb.h: struct trapframe (74 register_t words), then
# pcb_context[PCB_REG_S0..S7, SP, S8, RA, SR, GP, PC] (kgdb mipsfbsd-kern.c).
MIPS_CONTEXT = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "sp", "s8", "ra", "status",
                "gp", "pc"]


@pytest.mark.parametrize("width,order", [(4, "big"), (8, "little")])
def test_mips_pcb_context(width, order):
    """o32 (32-bit, big-endian) and n64 kernels: pcb_context after the trapframe."""
    kvm = FakeDump("mips", byteorder=order, ptrsize=width)
    k = FakeKernel(kvm)
    k.add_proc(1, "init", [(100001, "init", -1, {})])
    k.crash(100001, {})
    base = kvm.syms["dumppcb"] + 74 * width
    for i in range(len(MIPS_CONTEXT)):
        kvm.put_int(base + i * width, 0x1000 + i, width)
    (t,) = threads(kvm)
    assert t.registers == {name: 0x1000 + i for i, name in enumerate(MIPS_CONTEXT)}


def test_mips_n32_has_no_registers_but_threads_listed():
    """n32: 64-bit registers behind 32-bit pointers; no layout, said so."""
    kvm = FakeDump("mips", byteorder="big", ptrsize=4)
    kvm.kernel = type("K", (), {"ident": type("I", (), {"flags": 0x20})()})()
    k = FakeKernel(kvm)
    k.add_proc(1, "init", [(100001, "init", -1, {})])
    (t,) = threads(kvm)
    assert t.registers == {} and t.backtrace() == []
    assert any("no PCB layout for mips-n32" in w for w in kvm.warnings)


def test_partially_readable_pcb_keeps_readable_slots():
    kvm = FakeDump("amd64")
    k = FakeKernel(kvm)
    k.add_proc(7, "p", [(100007, "p", -1, {})])
    pcb = 0x5000_0FF0                       # rip/rbx/rsp... straddle into a hole
    kvm.store(pcb, bytes(range(16)))
    k.crash(100007, {})
    kvm.put_int(kvm.syms["dumppcb"], 0, 4)
    # point the thread at the straddling PCB instead of dumppcb
    kvm.put_int(kvm.syms["dumptid"], -1, 4)
    td = kvm.read_ptr(k.procs[0] + PROC_OFFS["p_threads"])
    kvm.put_ptr(td + THREAD_OFFS["td_pcb"], pcb)
    (t,) = threads(kvm)
    assert set(t.registers) == {"r15", "r14"}
