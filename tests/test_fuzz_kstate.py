"""Kernel-structure fuzzing: corrupted proc/thread lists, PCB pointers, msgbuf
indices and linker_files entries give partial results and warnings - never an
exception, never a hang (each kstate call is bounded by the harness)."""

from __future__ import annotations

import random
from typing import List, Tuple

import pytest
from fakedump import KLD_OFFS, FakeDump, FakeKernel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz_harness import CALL_BOUND_S, PHASES, REAL_KEYS, Failure, WorkCopy, time_limit

import kvm_dbg
from kvm_dbg.kstate import klds, msgbuf, panic_info, procs, threads

ARCHES = ("amd64", "i386", "arm64", "riscv", "powerpc64", "arm")
KSTATE_BOUND = 4 * CALL_BOUND_S
CALLS = ("threads", "procs", "msgbuf", "klds", "panic_info")


def _evil(rng: random.Random, width: int, near: List[int]) -> int:
    return _evil_raw(rng, width, near) % (1 << (8 * width))


def _evil_raw(rng: random.Random, width: int, near: List[int]) -> int:
    r = rng.random()
    if r < 0.3 and near:
        return rng.choice(near) + rng.choice([0, 0, 8, -8, 16, 4096])   # loops, self refs
    if r < 0.5:
        return rng.choice([0, 1, (1 << (8 * width)) - 1, 1 << (8 * width - 1), 0x7FFFFFFF,
                           0x80000000, 0xFFFFFFFF])
    return rng.getrandbits(8 * width)


def check_kstate(kvm, what: str, frames: bool = True) -> None:
    """Every kstate entry point, bounded; anything but a result is a Failure."""
    try:
        with time_limit(KSTATE_BOUND, f"{what} threads"):
            ts = threads(kvm)
            if frames:
                for t in ts[:16]:
                    t.frames()
        for name, fn in (("procs", procs), ("msgbuf", msgbuf), ("klds", klds),
                         ("panic_info", panic_info)):
            with time_limit(KSTATE_BOUND, f"{what} {name}"):
                fn(kvm)
    except Failure:
        raise
    except BaseException as e:
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise Failure(f"{what}: {type(e).__name__}: {e}") from None


def fake_kernel(arch: str, rng: random.Random) -> Tuple[FakeDump, FakeKernel]:
    """A small consistent kernel (procs, threads, msgbuf, klds) in a FakeDump."""
    kvm = FakeDump(arch)
    k = FakeKernel(kvm)
    for pid in range(rng.randrange(1, 6)):
        k.add_proc(pid, f"p{pid}", [(100000 + pid * 10 + i, f"t{i}",
                                     rng.choice([-1, 0, 1, 255, 300]),
                                     {"pc": 0x1000 + i, "sp": 0x2000_0000 + i * 64})
                                    for i in range(rng.randrange(0, 4))])
    k.crash(100000, {})
    w = kvm.ptrsize
    # message buffer: struct msgbuf {ptr, u32 magic, size, seq rseq wseq?...}
    buf = k.alloc(256)
    kvm.store(buf, b"<6>hello\n" * 20)
    mb = k.alloc(64)
    kvm.put_ptr(mb, buf)
    kvm.put_int(mb + w, 0x063062, 4)          # MSG_MAGIC
    kvm.put_int(mb + w + 4, 256, 4)           # msg_size
    kvm.put_int(mb + w + 8, 100, 4)           # wseq
    k.global_("msgbufp", 16)
    kvm.put_ptr(kvm.syms["msgbufp"], mb)
    # linker_files: TAILQ of linker_file with a few entries
    for name, off in KLD_OFFS.items():
        k.offset_symbol("kld_off_" + name, off)
    head = k.global_("linker_files", 16)
    prev = head
    for i in range(rng.randrange(0, 4)):
        lf = k.alloc(128)
        name = k.alloc(32)
        kvm.store(name, f"mod{i}.ko\0".encode())
        kvm.put_ptr(lf + KLD_OFFS["filename"], name)
        kvm.put_ptr(lf + KLD_OFFS["pathname"], name)
        kvm.put_ptr(lf + KLD_OFFS["address"], 0x3000_0000 + i * 0x10000)
        kvm.put_ptr(prev, lf)
        prev = lf
    return kvm, k


def corrupt_fake(rng: random.Random, kvm: FakeDump, k: FakeKernel, n: int) -> None:
    lo, hi = 0x1000_0000, k.heap
    near = list(k.procs) + [lo, k.data, hi]
    for _ in range(n):
        r = rng.random()
        if r < 0.5:      # pointer-sized slot anywhere in globals/heap
            base = rng.choice([lo, 0x2000_0000])
            addr = rng.randrange(base, max(base + 8, k.data if base == lo else hi))
            addr -= addr % kvm.ptrsize
            kvm.put_ptr(addr, _evil(rng, kvm.ptrsize, near))
        elif r < 0.7:    # 32-bit index/size/offset symbol values
            name = rng.choice(sorted(kvm.syms))
            kvm.put_int(kvm.syms[name] + rng.choice([0, 4, 8]), _evil(rng, 4, near), 4)
        elif r < 0.85:   # punch a hole
            kvm.unmap(rng.randrange(0x2000_0000, max(0x2000_1000, hi)))
        else:            # random bytes
            addr = rng.randrange(0x2000_0000, max(0x2000_0010, hi))
            kvm.store(addr, bytes(rng.getrandbits(8) for _ in range(rng.choice([4, 16, 64]))))


def fake_step(arch: str):
    def step(rng: random.Random, _st) -> None:
        kvm, k = fake_kernel(arch, rng)
        corrupt_fake(rng, kvm, k, rng.randrange(1, 40))
        check_kstate(kvm, f"fake {arch}")
    return step


# -- real dump memory, corrupted through a writable copy ---------------------------

class RealMemory:
    """A writable working copy of a real dump plus the kernel-structure
    addresses worth corrupting (procs, threads, PCBs, globals)."""

    def __init__(self, kernel: str, core: str, workdir: str, key: str) -> None:
        self.kernel = kernel
        self.wc = WorkCopy(core, workdir, f"kstate-{key}.core")
        with kvm_dbg.open(kernel, core) as kd:
            self.ptr = kd.ptrsize
            self.order = kd.byteorder
            spots = []
            for t in kd.threads():
                spots += [t.td_addr + o for o in range(0, 0x400, self.ptr)]
                spots += [t.proc_addr + o for o in range(0, 0x400, self.ptr)]
                if t.pcb_addr:
                    spots += [t.pcb_addr + o for o in range(0, 0x100, self.ptr)]
            for name in ("allproc", "zombproc", "dumptid", "dumppcb", "stoppcbs", "msgbufp",
                         "linker_files", "pidhashtbl", "pidhash", "mp_maxid", "osreldate",
                         "proc_off_p_list", "proc_off_p_threads", "thread_off_td_plist",
                         "thread_off_td_pcb", "pcb_size", "panicstr", "version"):
                a = kd.lookup(name)
                if a is not None:
                    spots += [a + o for o in range(0, 4 * self.ptr, self.ptr)]
            self.spots = []
            self.near = sorted({t.td_addr for t in kd.threads()} |
                               {t.proc_addr for t in kd.threads()})
            for a in spots:
                try:
                    self.spots.append((a, kd.translate(a)))
                except kvm_dbg.KvmError:
                    continue

    def run(self, rng: random.Random, n: int) -> None:
        patches = []
        for _ in range(n):
            _va, off = rng.choice(self.spots)
            w = rng.choice([self.ptr, self.ptr, 4, 1])
            v = _evil(rng, w, self.near)
            patches.append((off, v.to_bytes(w, self.order)))
        path = self.wc.apply(patches, None)
        try:
            with time_limit(CALL_BOUND_S, "open"):
                kd = kvm_dbg.open(self.kernel, path)
            try:
                check_kstate(kd, "real memory")
                if not isinstance(kd.warnings, list):
                    raise Failure("warnings is not a list")
            finally:
                kd.close()
        except Failure as f:
            raise Failure(f"{f}\npatches={[(o, d.hex()) for o, d in patches]}") from None
        finally:
            self.wc.restore()


def real_memory_step(kernel: str, core: str, workdir: str, key: str):
    rm = RealMemory(kernel, core, workdir, key)

    def step(rng: random.Random, _st) -> None:
        rm.run(rng, rng.randrange(1, 12))
    return step


# -- tests -----------------------------------------------------------------------

SETTINGS = dict(deadline=None, derandomize=True, print_blob=True, phases=PHASES,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@settings(max_examples=150, **SETTINGS)
@given(arch=st.sampled_from(ARCHES), rnd=st.randoms(use_true_random=False),
       n=st.integers(1, 60))
def test_fake_kernel_garbage(arch, rnd, n):
    kvm, k = fake_kernel(arch, rnd)
    corrupt_fake(rnd, kvm, k, n)
    check_kstate(kvm, f"fake {arch}")


@pytest.mark.parametrize("arch", ARCHES)
def test_fake_kernel_loops_and_self_references(arch):
    """Each list head and next pointer pointing at itself / its predecessor."""
    kvm, k = fake_kernel(arch, random.Random(5))
    for p in k.procs:
        kvm.put_ptr(p, p)                                # p_list.le_next = itself
        kvm.put_ptr(p + 16, p + 16 if arch != "i386" else p)  # p_threads first = itself
    kvm.put_ptr(kvm.syms["linker_files"], kvm.syms["linker_files"])
    check_kstate(kvm, "loops")
    assert kvm.warnings, "a loop must leave a warning"


@pytest.mark.parametrize("arch", ARCHES)
def test_fake_msgbuf_indices_extreme(arch):
    kvm, k = fake_kernel(arch, random.Random(7))
    mb = kvm.read_ptr(kvm.syms["msgbufp"])
    w = kvm.ptrsize
    for size in (0, 1, 0x7FFFFFFF, 0xFFFFFFFF):
        for idx in (0, 0xFFFFFFFF, 0x80000000):
            kvm.put_int(mb + w + 4, size, 4)
            for o in range(w + 8, w + 24, 4):
                kvm.put_int(mb + o, idx, 4)
            check_kstate(kvm, f"msgbuf size={size:x} idx={idx:x}", frames=False)


@pytest.fixture(scope="module")
def real_memories(real_dump_factory, tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("kstatefz"))
    out = {}
    for key, (name, _arch) in REAL_KEYS.items():
        d = real_dump_factory(name)
        out[key] = RealMemory(d.kernel, d.core, tmp, key)
    return out


@settings(max_examples=80, **SETTINGS)
@given(key=st.sampled_from(sorted(REAL_KEYS)), rnd=st.randoms(use_true_random=False),
       n=st.integers(1, 16))
def test_real_dump_memory_corruption(real_memories, key, rnd, n):
    real_memories[key].run(rnd, n)
