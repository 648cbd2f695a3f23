"""The core reader on the four REAL FreeBSD dumps (ground truth: expected.json)."""

from __future__ import annotations

import hashlib
import struct

import pytest

import kvm_dbg
from kvm_dbg import (
    KvmError,
    kvm_close,
    kvm_geterr,
    kvm_native,
    kvm_nlist2,
    kvm_open2,
    kvm_read,
    nlist,
)
from kvm_dbg.arch.base import host_machine
from kvm_dbg.pagetable import sign_extend

FORMATS = {
    "amd64-full": "ELF full dump",
    "amd64-minidump": "minidump v3",
    "arm64-minidump": "minidump v2",
    "i386-minidump": "minidump v2 (PAE)",
}


def _elf_resolver(kernel_path):
    """An independent resolver built with pyelftools (not kvm_dbg's index)."""
    from elftools.elf.elffile import ELFFile

    table = {}
    with open(kernel_path, "rb") as f:
        for sec in ELFFile(f).iter_sections():
            if sec.header["sh_type"] == "SHT_SYMTAB":
                for sym in sec.iter_symbols():
                    table.setdefault(sym.name, sym["st_value"])
    calls = []

    def resolve(name):
        calls.append(name)
        return table.get(name)

    resolve.calls = calls
    return resolve


def test_open_identifies_arch_and_format(real_dump):
    with kvm_dbg.open(real_dump.kernel, real_dump.core) as kd:
        assert kd.arch == real_dump.arch
        assert kd.format == FORMATS[real_dump.key]
        assert kd.native == (host_machine() == real_dump.arch)


def test_hz_through_pythonic_api(real_dump):
    with kvm_dbg.open(real_dump.kernel, real_dump.core) as kd:
        assert kd.read_int(kd.symbol("hz"), 4) == real_dump.expected["hz"]


def test_kvm_open2_with_resolver_reads_hz(real_dump):
    errbuf = bytearray(kvm_dbg.POSIX2_LINE_MAX)
    resolve = _elf_resolver(real_dump.kernel)
    kd = kvm_open2(real_dump.kernel, real_dump.core, kvm_dbg.O_RDONLY, errbuf, resolve)
    assert kd is not None, errbuf.split(b"\0")[0]
    try:
        nl = [nlist("hz"), nlist("no_such_symbol_xyz"), nlist(None)]
        assert kvm_nlist2(kd, nl) == 1
        assert nl[0].n_value == resolve("hz") and nl[0].n_type == 0x07
        assert nl[1].n_value == 0 and nl[1].n_type == 0
        assert "hz" in resolve.calls
        buf = bytearray(4)
        assert kvm_read(kd, nl[0].n_value, buf) == 4
        assert struct.unpack("<I", buf)[0] == real_dump.expected["hz"]
    finally:
        assert kvm_close(kd) == 0


def test_kvm_open2_without_resolver_follows_native_rule(real_dump):
    errbuf = bytearray(kvm_dbg.POSIX2_LINE_MAX)
    kd = kvm_open2(real_dump.kernel, real_dump.core, kvm_dbg.O_RDONLY, errbuf, None)
    if host_machine() == real_dump.arch:
        assert kd is not None
        assert kvm_native(kd) == 1
        nl = [nlist("_hz"), nlist("")]          # leading underscore stripped as libc nlist
        assert kvm_nlist2(kd, nl) == 0
        assert nl[0].n_type & 0x01              # N_EXT: hz is global
        kvm_close(kd)
    else:
        assert kd is None
        assert errbuf.split(b"\0")[0] == b"non-native kernel requires a symbol resolver"


def test_resolver_is_the_only_symbol_source(real_dump):
    """With a caller's resolver, symbols come from it, not from the ELF."""
    real = _elf_resolver(real_dump.kernel)
    fake_hz = real("hz") + 4        # deliberately wrong: proves who answers

    def resolver(name):
        return fake_hz if name == "hz" else real(name)

    kd = kvm_open2(real_dump.kernel, real_dump.core, 0, None, resolver)
    assert kd is not None
    try:
        nl = [nlist("hz")]
        kvm_nlist2(kd, nl)
        assert nl[0].n_value == fake_hz
    finally:
        kvm_close(kd)


def _truncated_va(kd):
    """A kernel VA whose page the header promises but the file lacks."""
    be = kd.backend
    if kd.format == "ELF full dump":
        seg = max(be.segs.segs, key=lambda s: s.offset + s.filesz)
        assert seg.offset + seg.filesz > kd.core.size, "expected a truncated segment"
        cut = seg.paddr + (kd.core.size - seg.offset)      # first PA not on disk
        for va, pa, size, _e in be.pt.leaves():
            if pa <= cut < pa + size:
                return sign_extend(va, 48) + (cut - pa)
        raise AssertionError("no kernel mapping into the truncated region")
    index = be.index
    last = index.nbits - 1
    while last >= 0 and not index.is_set(last):
        last -= 1
    pa = index.pa_of(last)
    assert index.sparse + (index.cum[-1] - 1) * index.page >= kd.core.size
    if kd.arch == "amd64":
        return be.dmapbase + pa
    if kd.arch == "arm64":
        return be.dmapbase + pa - be.dmapphys
    for page in kd.walk_pages():
        if page.kp_paddr == pa:
            return page.kp_kmap_vaddr
    # i386 has no direct map and no kernel mapping reaches the lost pages:
    # the physical index itself must call them absent.
    assert index.find(pa) is None
    return None


def test_truncated_region_fails_cleanly(real_dump):
    with kvm_dbg.open(real_dump.kernel, real_dump.core) as kd:
        va = _truncated_va(kd)
        if va is None:
            return
        with pytest.raises(KvmError) as ei:
            kd.read(va, 8)
        assert f"0x{va:x}" in str(ei.value)
        assert kd.read_partial(va, 8) == b""
        # the rest still works
        assert kd.read_int(kd.symbol("hz"), 4) == real_dump.expected["hz"]


def test_truncated_region_compat_returns_minus_one(real_dump):
    kd = kvm_open2(real_dump.kernel, real_dump.core, 0, None, _elf_resolver(real_dump.kernel))
    try:
        va = _truncated_va(kd)
        if va is None:
            return
        assert kvm_read(kd, va, bytearray(16)) == -1
        assert kvm_geterr(kd) == f"invalid address (0x{va:x})"
    finally:
        kvm_close(kd)


def test_direct_map_alias_reads_same_bytes(real_dumps):
    """amd64: hz through the kernel map and through the direct map agree."""
    d = real_dumps["amd64-minidump"]
    with kvm_dbg.open(d.kernel, d.core) as kd:
        hz = kd.symbol("hz")
        pa, _ = kd.backend.pt.translate(hz)
        assert kd.read(kd.backend.dmapbase + pa, 4) == kd.read(hz, 4)


def test_walk_pages_agrees_with_reads(real_dumps):
    """Every page the walker reports with an offset reads back those bytes."""
    for key in ("amd64-minidump", "arm64-minidump", "i386-minidump"):
        d = real_dumps[key]
        with kvm_dbg.open(d.kernel, d.core) as kd:
            n = 0
            for page in kd.walk_pages():
                assert page.kp_version == 2
                if page.kp_kmap_vaddr and page.kp_offset >= 0 and page.kp_len == 4096:
                    mm = kd.core.mm
                    assert kd.read(page.kp_kmap_vaddr, 64) == \
                        mm[page.kp_offset:page.kp_offset + 64]
                    n += 1
                    if n > 200:
                        break
            assert n > 0, key


def test_read_only_open_changes_nothing(real_dump):
    def digest(path):
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    before = (digest(real_dump.kernel), digest(real_dump.core))
    with kvm_dbg.open(real_dump.kernel, real_dump.core) as kd:
        kd.read(kd.symbol("hz"), 4)
        with pytest.raises(KvmError, match="dead kernels"):
            kd.write(kd.symbol("hz"), b"\0\0\0\0")
    assert (digest(real_dump.kernel), digest(real_dump.core)) == before


def test_partial_last_page_of_truncated_full_dump(real_dumps):
    """The amd64 full dump ends in the middle of a page: the readable half
    comes back from read_partial, read() of the whole page fails."""
    d = real_dumps["amd64-full"]
    with kvm_dbg.open(d.kernel, d.core) as kd:
        be = kd.backend
        seg = max(be.segs.segs, key=lambda s: s.offset + s.filesz)
        cut = kd.core.size - seg.offset          # bytes of the segment on disk
        pa_page = seg.paddr + cut // 4096 * 4096
        have = cut % 4096
        assert have, "expected the file to end mid-page"
        for va, pa, size, _e in be.pt.leaves():
            if pa <= pa_page < pa + size:
                va = sign_extend(va, 48) + (pa_page - pa)
                break
        else:
            raise AssertionError("the kernel maps no page at the dump's last partial page")
        assert len(kd.read_partial(va, 4096)) == have
        with pytest.raises(KvmError):
            kd.read(va, 4096)
        kd2 = kvm_open2(d.kernel, d.core, 0, None, _elf_resolver(d.kernel))
        try:
            assert kvm_read(kd2, va, bytearray(4096)) == have      # short read, as libkvm
        finally:
            kvm_close(kd2)
