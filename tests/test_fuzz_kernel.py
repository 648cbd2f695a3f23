"""Fuzzing the kernel ELF reader: ELF header, section table, symbol table.

A mutated kernel must open (and resolve symbols) or fail with ``KvmError``,
within the harness bound, with the pristine dump beside it.
"""

from __future__ import annotations

import random
import struct
from itertools import islice
from typing import List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz_harness import (
    CALL_BOUND_S,
    MEM_BOUND,
    PHASES,
    Failure,
    Mutation,
    Region,
    Target,
    WorkCopy,
    exercise,
    fixture_cases,
    fixture_target,
    interesting,
    peak_memory,
    time_limit,
)

import kvm_dbg
from kvm_dbg.elfkernel import KernelImage

NAMES = ("hz", "_hz", "version", "kernbase", "allproc", "nosuchsymbol", "")


def kernel_regions(path: str) -> tuple:
    """(byte order, size, regions) of an ELF kernel's header, sections and symbols."""
    with open(path, "rb") as f:
        data = f.read()
    order = "little" if data[5] == 1 else "big"
    e = "<" if order == "little" else ">"
    regs: List[Region] = []
    if data[4] == 2:
        shoff, = struct.unpack_from(e + "Q", data, 40)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 58)
        for name, off, w in (("e_shoff", 40, 8), ("e_shentsize", 58, 2), ("e_shnum", 60, 2),
                             ("e_shstrndx", 62, 2), ("e_phoff", 32, 8), ("e_phnum", 56, 2),
                             ("e_type", 16, 2), ("e_machine", 18, 2), ("ei_class", 4, 1),
                             ("ei_data", 5, 1), ("e_ehsize", 52, 2)):
            regs.append(Region("ehdr." + name, off, w, w))
        sfields = (("sh_name", 0, 4), ("sh_type", 4, 4), ("sh_flags", 8, 8), ("sh_addr", 16, 8),
                   ("sh_offset", 24, 8), ("sh_size", 32, 8), ("sh_link", 40, 4),
                   ("sh_entsize", 56, 8))
        symfields, symsize = (("st_name", 0, 4), ("st_info", 4, 1), ("st_shndx", 6, 2),
                              ("st_value", 8, 8)), 24
    else:
        shoff, = struct.unpack_from(e + "I", data, 32)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 46)
        for name, off, w in (("e_shoff", 32, 4), ("e_shentsize", 46, 2), ("e_shnum", 48, 2),
                             ("e_shstrndx", 50, 2), ("e_phoff", 28, 4), ("e_phnum", 44, 2),
                             ("e_type", 16, 2), ("e_machine", 18, 2), ("ei_class", 4, 1),
                             ("ei_data", 5, 1)):
            regs.append(Region("ehdr." + name, off, w, w))
        sfields = (("sh_name", 0, 4), ("sh_type", 4, 4), ("sh_flags", 8, 4), ("sh_addr", 12, 4),
                   ("sh_offset", 16, 4), ("sh_size", 20, 4), ("sh_link", 24, 4),
                   ("sh_entsize", 36, 4))
        symfields, symsize = (("st_name", 0, 4), ("st_value", 4, 4), ("st_info", 12, 1),
                              ("st_shndx", 14, 2)), 16
    for i in range(min(shnum, 64)):
        base = shoff + i * shentsize
        if base + shentsize > len(data):
            break
        for name, off, w in sfields:
            regs.append(Region(f"shdr[{i}].{name}", base + off, w, w))
        stype, = struct.unpack_from(e + "I", data, base + 4)
        if stype == 2:  # SHT_SYMTAB
            soff = struct.unpack_from(e + ("Q" if data[4] == 2 else "I"), data,
                                      base + (24 if data[4] == 2 else 16))[0]
            ssize = struct.unpack_from(e + ("Q" if data[4] == 2 else "I"), data,
                                       base + (32 if data[4] == 2 else 20))[0]
            for j in range(min(ssize // symsize, 256)):
                for name, off, w in symfields:
                    regs.append(Region(f"sym[{j}].{name}", soff + j * symsize + off, w, w))
            regs.append(Region("symtab", soff, min(ssize, 1 << 16), 1))
    return order, len(data), regs


def mutate_kernel(rng: random.Random, kt: Target) -> Mutation:
    m = Mutation()
    for _ in range(rng.randrange(1, 4)):
        r = rng.random()
        if r < 0.8:
            reg = rng.choice(kt.regions)
            if reg.width == 1 and reg.size > 1:
                off = reg.off + rng.randrange(reg.size)
                m.patches.append((off, bytes([rng.getrandbits(8)])))
                m.notes.append(f"{reg.name}@{off}")
                continue
            v = interesting(rng, reg.width, kt)
            m.patches.append((reg.off, v.to_bytes(reg.width, kt.order)))
            m.notes.append(f"{reg.name}=0x{v:x}")
        elif r < 0.93:
            off = rng.randrange(min(kt.size, 1 << 16))
            m.patches.append((off, bytes([rng.getrandbits(8)])))
            m.notes.append(f"flip@{off}")
        else:
            m.truncate = rng.randrange(1, kt.size)
            m.notes.append(f"truncate={m.truncate}")
    return m


def kernel_target(t: Target) -> Target:
    order, size, regs = kernel_regions(t.kernel)
    return Target("kernel-of-" + t.name, t.kernel, t.core, order, size, "kernel", regs,
                  addrs=t.addrs)


def check_kernel(path: str) -> None:
    """KernelImage alone: open, sections, lookups, symbol iteration, file bytes."""
    try:
        with time_limit(CALL_BOUND_S, "KernelImage"):
            img = KernelImage(path)
    except kvm_dbg.KvmError:
        return
    try:
        for what, fn in (("sections", lambda: img.sections),
                         ("lookup", lambda: [img.lookup(n) for n in NAMES]),
                         ("nlist", lambda: [img.nlist(n) for n in NAMES]),
                         ("symbols", lambda: list(islice(img.symbols(), 5000))),
                         ("file_bytes_at", lambda: img.file_bytes_at(img.lookup("hz") or 0, 16))):
            try:
                with time_limit(CALL_BOUND_S, f"kernel {what}"):
                    fn()
            except kvm_dbg.KvmError:
                pass
    finally:
        img.close()


def kernel_step(t: Target, workdir: str):
    """A fuzz step for benchmarks/fuzz_long.py: mutate the kernel of ``t``."""
    kt = kernel_target(t)
    wc = WorkCopy(t.kernel, workdir, kt.name.replace(":", "_") + ".kernel")

    def step(rng: random.Random, _st) -> None:
        run_kernel(kt, t, wc, mutate_kernel(rng, kt), rng)
    return step


def run_kernel(kt: Target, t: Target, wc: WorkCopy, m: Mutation, rng: random.Random) -> None:
    path = wc.apply(m.patches, m.truncate)
    try:
        try:
            check_kernel(path)
        except Exception as e:  # noqa: BLE001
            raise Failure(f"{type(e).__name__}: {e}") from None
        exercise(t, t.core, rng, kernel=path, resolver=None, compat_too=rng.random() < 0.3)
    except (Failure, BaseException) as f:
        if isinstance(f, (KeyboardInterrupt, SystemExit)):
            raise
        import json
        raise Failure(f"{kt.name}: {json.dumps(m.to_json())}\n{f}") from None
    finally:
        wc.restore()


# -- tests -------------------------------------------------------------------------

KERNEL_CASES = [c for c in fixture_cases() if c[0] in (
    "amd64-minidump-v3", "i386-minidump-v2-paeTrue", "arm64-minidump-v2",
    "amd64-elf-v0", "i386-elf-v0-layoutfbsd12-paeFalse", "arm-minidump-v2-endianbe-mmuv6",
    "mips-minidump-v2-abin64-endianbe", "riscv-minidump-v2-modesv39")]


@pytest.fixture(scope="module")
def kernel_targets(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("fuzzkern"))
    out = []
    for name, arch, fmt, version, opts in KERNEL_CASES:
        t = fixture_target(name, arch, fmt, version, opts, tmp)
        out.append((t, kernel_target(t), WorkCopy(t.kernel, tmp, name + ".kernel")))
    return out


@settings(max_examples=300, deadline=None, phases=PHASES, derandomize=True, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), rnd=st.randoms(use_true_random=False))
def test_mutated_fixture_kernels(kernel_targets, data, rnd):
    t, kt, wc = data.draw(st.sampled_from(kernel_targets), label="target")
    run_kernel(kt, t, wc, mutate_kernel(rnd, kt), rnd)


@settings(max_examples=60, deadline=None, phases=PHASES, derandomize=True, print_blob=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), rnd=st.randoms(use_true_random=False))
def test_mutated_real_arm64_kernel(real_dump_factory, tmp_path_factory, data, rnd):
    d = real_dump_factory("vmcore-arm64-minidump")
    t = _real_arm64(d, tmp_path_factory)
    run_kernel(t[1], t[0], t[2], mutate_kernel(rnd, t[1]), rnd)


_CACHE: dict = {}


def _real_arm64(d, tmp_path_factory):
    if "arm64" not in _CACHE:
        from test_fuzz_harness import real_target
        t = real_target(d.kernel, d.core, "arm64-minidump")
        kt = kernel_target(t)
        wc = WorkCopy(t.kernel, str(tmp_path_factory.mktemp("k")), "kernel")
        _CACHE["arm64"] = (t, kt, wc)
    return _CACHE["arm64"]


@pytest.mark.parametrize("field,value", [
    ("ehdr.e_shoff", (1 << 63)), ("ehdr.e_shnum", 0xFFFF), ("ehdr.e_shentsize", 0),
    ("ehdr.e_shentsize", 0xFFFF), ("ehdr.e_shstrndx", 0xFFFF), ("ehdr.e_shnum", 0),
])
def test_kernel_header_extremes_bounded_memory(kernel_targets, field, value):
    """Huge section-table numbers allocate nothing sized by them."""
    for t, kt, wc in kernel_targets:
        reg = next(r for r in kt.regions if r.name == field)
        v = value & ((1 << (8 * reg.width)) - 1)
        m = Mutation([(reg.off, v.to_bytes(reg.width, kt.order))])
        with peak_memory() as mem:
            run_kernel(kt, t, wc, m, random.Random(0))
        assert mem["peak"] < MEM_BOUND, (t.name, field, mem["peak"])


def test_extended_section_count_is_bounded(kernel_targets, tmp_path):
    """e_shnum = 0 with section 0's sh_size huge (ELF extended numbering)."""
    for t, kt, wc in kernel_targets:
        shnum = next(r for r in kt.regions if r.name == "ehdr.e_shnum")
        size0 = next(r for r in kt.regions if r.name == "shdr[0].sh_size")
        for count in (0xFFFF_FFFF, (1 << (8 * size0.width)) - 1, 1 << 20):
            v = count & ((1 << (8 * size0.width)) - 1)
            m = Mutation([(shnum.off, bytes(2)), (size0.off, v.to_bytes(size0.width, kt.order))])
            with peak_memory() as mem:
                run_kernel(kt, t, wc, m, random.Random(1))
            assert mem["peak"] < MEM_BOUND, (t.name, count, mem["peak"])
