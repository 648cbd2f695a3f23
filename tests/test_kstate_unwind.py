"""Frame-pointer unwinding and trap frames on a fake kvm."""

from __future__ import annotations

import bisect

from fakedump import FakeDump, FakeKernel

from kvm_dbg.kstate.archdata import ARCHES
from kvm_dbg.kstate.unwind import is_trap_function, unwind

AMD64 = ARCHES["amd64"]


class Syms:
    """function_at() over a {name: (start, size)} map, like ksyms.KernelSymbols."""

    def __init__(self, funcs: dict) -> None:
        self.funcs = sorted((start, size, name) for name, (start, size) in funcs.items())
        self.starts = [f[0] for f in self.funcs]

    def function_at(self, pc):
        i = bisect.bisect_right(self.starts, pc) - 1
        if i < 0:
            return None
        start, size, name = self.funcs[i]
        return (name, start) if pc < start + size else None


def test_amd64_chain_drops_frame_with_null_saved_fp():
    kvm = FakeDump("amd64")
    k = FakeKernel(kvm)
    fp = k.stack([(0x1111, 0x40), (0x2222, 0x40), (0x3333, 0x40)])
    frames = unwind(kvm, AMD64, {"rip": 0x1000, "rbp": fp, "rsp": fp - 0x18})
    # the outermost record's saved fp is 0: LLDB rejects that caller frame.
    assert [f.pc for f in frames] == [0x1000, 0x1111, 0x2222]
    assert frames[1].sp == fp + 16 and frames[1].fp == fp + 0x40
    assert frames[0].kind == "pcb" and frames[1].kind == "frame"


def test_amd64_chain_stops_on_unreadable_and_keeps_last_frame():
    kvm = FakeDump("amd64")
    k = FakeKernel(kvm)
    fp = k.stack([(0x1111, 0x40), (0x2222, 0x40)])
    kvm.put_ptr(fp + 0x40, 0x7FFF_FFFF_C900)            # user stack, unmapped
    frames = unwind(kvm, AMD64, {"rip": 0x1000, "rbp": fp})
    assert [f.pc for f in frames] == [0x1000, 0x1111, 0x2222]


def test_loop_and_limit():
    kvm = FakeDump("amd64")
    k = FakeKernel(kvm)
    fp = k.stack([(0x1111, 0x40), (0x2222, 0x40)])
    kvm.put_ptr(fp + 0x40, fp)                          # cycle
    frames = unwind(kvm, AMD64, {"rip": 0x1000, "rbp": fp})
    assert len(frames) <= 4
    fp = k.stack([(0x1000 + i, 0x10) for i in range(100)])
    assert len(unwind(kvm, AMD64, {"rip": 1, "rbp": fp}, max_frames=10)) == 10


def test_misaligned_and_zero_pc():
    kvm = FakeDump("amd64")
    k = FakeKernel(kvm)
    fp = k.stack([(0x1111, 0x40), (0x2222, 0x40), (0x3333, 0x40)])
    kvm.put_ptr(fp + 0x40, fp + 0x83)                   # misaligned saved fp
    assert [f.pc for f in unwind(kvm, AMD64, {"rip": 9, "rbp": fp})] == [9, 0x1111]
    kvm.put_ptr(fp + 8, 0)
    assert [f.pc for f in unwind(kvm, AMD64, {"rip": 9, "rbp": fp})] == [9]


def test_no_pc_no_frames():
    assert unwind(FakeDump("amd64"), AMD64, {}) == []


def test_amd64_trapframe_then_chain():
    kvm = FakeDump("amd64")
    k = FakeKernel(kvm)
    syms = Syms({"trap": (0x5000, 0x100), "calltrap": (0x6000, 0x20),
                 "victim": (0x7000, 0x100), "fork_trampoline": (0x8000, 0x40)})
    # the interrupted code's own chain: victim <- caller 0x7777
    victim_fp = k.stack([(0x7777, 0x40), (0x8010, 0x40)])
    # trap() called from calltrap: record [fp] -> anything, [fp+8] = calltrap+5
    stack = k.alloc(0x1000)
    trap_fp = stack + 0x100
    kvm.put_ptr(trap_fp, 0x1234)
    kvm.put_ptr(trap_fp + 8, 0x6005)
    tf = trap_fp + 16                                   # SP of the calltrap frame
    kvm.put_ptr(tf + 152, 0x7010)                       # rip
    kvm.put_ptr(tf + 176, victim_fp - 0x20)             # rsp
    kvm.put_ptr(tf + 64, victim_fp)                     # rbp
    kvm.put_ptr(tf + 48, 0xAAAA)                        # rax
    kvm.put_ptr(tf + 160, 0x20)                         # cs
    frames = unwind(kvm, AMD64, {"rip": 0x5010, "rbp": trap_fp, "rsp": trap_fp - 8},
                    syms=syms)
    assert [f.pc for f in frames][:4] == [0x5010, 0x6005, 0x7010, 0x7777]
    assert [f.function for f in frames][:3] == ["trap", "calltrap", "victim"]
    tframe = frames[2]
    assert tframe.kind == "trapframe" and tframe.regs["rax"] == 0xAAAA
    assert tframe.regs["rsp"] == victim_fp - 0x20


def test_fork_trampoline_zero_pc_ends():
    kvm = FakeDump("amd64")
    k = FakeKernel(kvm)
    syms = Syms({"fork_trampoline": (0x8000, 0x40)})
    sp = k.alloc(0x400)
    # a never-run thread: pc == fork_trampoline start, frame at sp + 8, rip 0
    frames = unwind(kvm, AMD64, {"rip": 0x8000, "rsp": sp, "rbp": 0}, syms=syms)
    assert [f.pc for f in frames] == [0x8000]
    kvm.put_ptr(sp + 8 + 152, 0x9999)
    frames = unwind(kvm, AMD64, {"rip": 0x8000, "rsp": sp, "rbp": 0}, syms=syms)
    assert [f.pc for f in frames] == [0x8000, 0x9999]


def test_x_vector_is_a_trap_function():
    assert is_trap_function(AMD64, "Xtimerint")
    assert not is_trap_function(AMD64, "X_notavector")
    assert not is_trap_function(ARCHES["arm64"], "Xtimerint")


def test_i386_kernel_trap_has_no_esp():
    kvm = FakeDump("i386")
    k = FakeKernel(kvm)
    syms = Syms({"calltrap": (0x6000, 0x20), "trap": (0x5000, 0x100)})
    kvm.define("calltrap", 0x6000)
    kvm.store(0x6000, b"\x54")                          # push %esp: by reference
    stack = k.alloc(0x400)
    fp = stack + 0x40
    kvm.put_ptr(fp, 0x100)
    kvm.put_ptr(fp + 4, 0x6005)
    tf = fp + 8 + 4                                     # calltrap frame SP + 4
    kvm.put_ptr(tf + 52, 0x7010)                        # eip
    kvm.put_ptr(tf + 56, 0x20)                          # cs: kernel
    kvm.put_ptr(tf + 20, 0x3000)                        # ebp
    frames = unwind(kvm, ARCHES["i386"], {"eip": 0x5010, "ebp": fp}, syms=syms)
    t = frames[2]
    assert t.pc == 0x7010 and t.regs["esp"] == tf + 64 and "ss" not in t.regs


def test_arm64_chain_alignment():
    kvm = FakeDump("arm64")
    k = FakeKernel(kvm)
    fp = k.stack([(0xFFFF000000001000, 0x40), (0xFFFF000000002000, 0x38),
                  (0xFFFF000000003000, 0x40)])
    frames = unwind(kvm, ARCHES["arm64"], {"pc": 1, "fp": fp, "sp": fp})
    # the second saved fp (fp + 0x78) is not 16-aligned: stop before it
    assert [f.pc for f in frames] == [1, 0xFFFF000000001000]


def test_riscv_record_below_fp():
    kvm = FakeDump("riscv")
    k = FakeKernel(kvm)
    base = k.alloc(0x400)
    fp0, fp1 = base + 0x100, base + 0x200
    kvm.put_ptr(fp0 - 8, 0x4444)
    kvm.put_ptr(fp0 - 16, fp1)
    frames = unwind(kvm, ARCHES["riscv"], {"pc": 1, "fp": fp0, "sp": base})
    assert [f.pc for f in frames] == [1, 0x4444] and frames[1].sp == fp0


def test_powerpc64_backchain():
    kvm = FakeDump("powerpc64")
    k = FakeKernel(kvm)
    base = k.alloc(0x400)
    sp0, sp1, sp2 = base, base + 0x80, base + 0x100
    kvm.put_ptr(sp0, sp1)
    kvm.put_ptr(sp1 + 16, 0xC000000000005555)
    kvm.put_ptr(sp1, sp2)
    kvm.put_ptr(sp2 + 16, 0)
    frames = unwind(kvm, ARCHES["powerpc64"], {"pc": 2, "r1": sp0})
    assert [f.pc for f in frames] == [2, 0xC000000000005555]
