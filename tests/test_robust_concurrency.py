"""One descriptor read from 8 threads at once gives the bytes serial reads give;
kernel-state calls run concurrently too."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_fuzz_harness import fixture_cases, fixture_target

import kvm_dbg

THREADS = 8


def _plan(kd, addrs, rng, n):
    pages = [p.kp_kmap_vaddr for p in kd.walk_pages() if p.kp_kmap_vaddr][:256]
    pool = list(addrs) + pages
    plan = []
    for _ in range(n):
        a = rng.choice(pool) + rng.randrange(-64, 4096)
        plan.append((a, rng.choice([1, 8, 64, 4096, 3 * 4096 + 7])))
    return plan


def _serial(kd, plan):
    out = []
    for a, n in plan:
        try:
            out.append(kd.read(a, n))
        except kvm_dbg.KvmError as e:
            out.append(("err", str(e)))
        out.append(kd.read_partial(a, n))
    return out


def _concurrent(kd, plan):
    barrier = threading.Barrier(THREADS)
    chunks = [plan[i::THREADS] for i in range(THREADS)]

    def work(chunk):
        barrier.wait()
        return _serial(kd, chunk)
    with ThreadPoolExecutor(THREADS) as ex:
        results = list(ex.map(work, chunks))
    merged = [None] * (2 * len(plan))
    for i, res in enumerate(results):
        for j in range(len(res) // 2):
            k = i + j * THREADS
            merged[2 * k], merged[2 * k + 1] = res[2 * j], res[2 * j + 1]
    return merged


CASES = [c for c in fixture_cases() if c[0] in (
    "amd64-minidump-v3", "amd64-elf-v0", "i386-minidump-v2-paeTrue",
    "arm64-minidump-v3-page_flag1", "i386-elf-v0-layoutfbsd12-paeTrue")]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fixture_reads_from_eight_threads(case, tmp_path):
    name, arch, fmt, version, opts = case
    t = fixture_target(name, arch, fmt, version, opts, str(tmp_path))
    with kvm_dbg.open(t.kernel, t.core) as kd:
        plan = _plan(kd, t.addrs, random.Random(name), 4000)
        serial = _serial(kd, plan)
    with kvm_dbg.open(t.kernel, t.core) as kd:      # cold caches: races in filling them
        assert _concurrent(kd, plan) == serial


@pytest.mark.parametrize("key,name", [("amd64", "vmcore-amd64-minidump"),
                                      ("arm64", "vmcore-arm64-minidump"),
                                      ("i386", "vmcore-i386-minidump"),
                                      ("amd64", "vmcore-amd64-full")])
def test_real_dump_reads_and_kstate_concurrently(real_dump_factory, key, name):
    d = real_dump_factory(name)
    with kvm_dbg.open(d.kernel, d.core) as kd:
        addrs = [kd.symbol("hz")] + [t.td_addr for t in kd.threads()]
        plan = _plan(kd, addrs, random.Random(name), 3000)
        serial = _serial(kd, plan)
        ref = [(t.tid, t.name, t.registers, t.backtrace()) for t in kd.threads()]
    with kvm_dbg.open(d.kernel, d.core) as kd:
        assert _concurrent(kd, plan) == serial

        def kstate(_i):
            ts = kd.threads()
            kd.procs()
            kd.msgbuf()
            kd.klds()
            kd.panic_info()
            return [(t.tid, t.name, t.registers, t.backtrace()) for t in ts]
        with ThreadPoolExecutor(THREADS) as ex:
            for got in ex.map(kstate, range(THREADS)):
                assert got == ref
