"""Corrupted structures never raise: random garbage over procs and threads."""

from __future__ import annotations

import random

import pytest
from fakedump import PCB_SIZE, PROC_SIZE, THREAD_SIZE, FakeDump, FakeKernel

from kvm_dbg.kstate import klds, msgbuf, panic_info, procs, threads


@pytest.mark.parametrize("arch", ["amd64", "i386", "arm64", "riscv", "powerpc64", "arm"])
@pytest.mark.parametrize("seed", range(8))
def test_garbage_never_raises(arch, seed):
    rng = random.Random(seed)
    kvm = FakeDump(arch)
    k = FakeKernel(kvm)
    for pid in range(4):
        k.add_proc(pid, f"p{pid}", [(100000 + pid * 10 + i, "t", rng.choice([-1, 0, 1, 300]),
                                     {}) for i in range(3)])
    k.crash(100010, {})
    heap_lo, heap_hi = 0x2000_0000, k.heap
    # scribble: random bytes, random pointers into the heap and into holes
    for _ in range(60):
        addr = rng.randrange(heap_lo, heap_hi)
        choice = rng.random()
        if choice < 0.4:
            kvm.store(addr, rng.randbytes(8) if hasattr(rng, "randbytes")
                      else bytes(rng.getrandbits(8) for _ in range(8)))
        elif choice < 0.8:
            kvm.put_ptr(addr - addr % kvm.ptrsize,
                        rng.randrange(heap_lo, heap_hi + PROC_SIZE + THREAD_SIZE + PCB_SIZE))
        else:
            kvm.put_ptr(addr - addr % kvm.ptrsize, rng.getrandbits(8 * kvm.ptrsize))
    for name in ("thread_off_td_pcb", "proc_off_p_comm"):
        if rng.random() < 0.3:
            k.offset_symbol(name, rng.getrandbits(31) - (1 << 30))
    ts = threads(kvm)
    for t in ts:
        assert len(t.frames(max_frames=64)) <= 64
    procs(kvm)
    msgbuf(kvm)
    klds(kvm)
    panic_info(kvm)
