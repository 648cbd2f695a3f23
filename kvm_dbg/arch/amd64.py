"""amd64: minidumps v1-v3 and ELF full dumps (formats.md §3, §6.3)."""

from __future__ import annotations

import struct
from typing import Iterator, Optional, Tuple

from ..elfcore import PhysSegments, read_phdrs
from ..errors import KvmError
from ..pagetable import (
    INVALID,
    LEAF,
    TABLE,
    FlatRoot,
    Level,
    PageTable,
    TableRoot,
    Untranslatable,
    sign_extend,
)
from .base import (
    VM_PROT_EXECUTE,
    VM_PROT_READ,
    VM_PROT_WRITE,
    ArchSpec,
    Backend,
    KvmPage,
    host_is,
    register,
    untranslatable,
)
from .minidump_common import MinidumpBackend

EM_X86_64 = 62

# Page-table entry bits (kvm_amd64.h).
PG_V, PG_RW, PG_PS = 0x1, 0x2, 0x80
PG_NX = 1 << 63
PG_FRAME = 0x000FFFFFFFFFF000
PG_PS_FRAME = 0x000FFFFFFFE00000
PG_1GB_FRAME = 0x000FFFFFC0000000


def _pte(e: int) -> int:
    return LEAF if e & PG_V else INVALID


def _dir(e: int) -> int:
    if not e & PG_V:
        return INVALID
    return LEAF if e & PG_PS else TABLE


def _frame_dir(big: int):
    return lambda e: (e & big) if e & PG_PS else (e & PG_FRAME)


def _prot(e: int) -> int:
    p = VM_PROT_READ
    if e & PG_RW:
        p |= VM_PROT_WRITE
    if not e & PG_NX:
        p |= VM_PROT_EXECUTE
    return p


def _frame(e: int) -> int:
    return e & PG_FRAME


class Amd64Minidump(MinidumpBackend):
    arch = "amd64"
    magic = b"minidump FreeBSD/amd64"
    header_size = 72
    fields = (("version", 24, "I"), ("msgbufsize", 28, "I"), ("bitmapsize", 32, "I"),
              ("pmapsize", 36, "I"), ("kernbase", 40, "Q"), ("dmapbase", 48, "Q"),
              ("dmapend", 56, "Q"))
    version_fields = {3: (("dumpavailsize", 64, "I"),)}
    max_version = 3
    version_word = "expected"

    def setup(self) -> None:
        h = self.hdr
        self.kernbase, self.dmapbase, self.dmapend = h["kernbase"], h["dmapbase"], h["dmapend"]
        root = FlatRoot(self.kernbase, self.pmap.get, self.pmap.count)
        if self.version == 1:
            self.fn = "_amd64_minidump_vatop_v1"
            levels = [Level(12, 0, _pte, _frame, f"{self.fn}: pte not valid")]
        else:
            self.fn = "_amd64_minidump_vatop"
            levels = [Level(21, 0, _dir, _frame_dir(PG_PS_FRAME), f"{self.fn}: pde not valid"),
                      Level(12, 9, _pte, _frame, f"{self.fn}: pte not valid")]
        self.pt = PageTable(root, levels, "little", self.phys,
                            lambda pa: f"cannot find page table entry for {pa}")

    def kvatop(self, va: int) -> Tuple[int, int]:
        if va < self.kernbase and self.dmapbase <= va < self.dmapend:
            off = self.index.find(va - self.dmapbase)       # hot path: inlined
            if off is not None and off + 4096 - (va & 4095) <= self.core.size:
                return off, 4096 - (va & 4095)
            return self.phys_to_offset(va, va - self.dmapbase, dmap=True)
        if va >= self.kernbase:
            try:
                pa, _span = self.pt.translate(va)
            except Untranslatable as u:
                raise self.fail(va, u.hard) from None
            return self.phys_to_offset(va, pa)
        raise self.not_minidumped(va)

    @untranslatable
    def kvatop_run(self, va: int, size: int) -> Tuple[int, int]:
        if va < self.kernbase and self.dmapbase <= va < self.dmapend:
            return self.dmap_run(va, va - self.dmapbase, min(size, self.dmapend - va))
        return self.kvatop(va)

    @property
    def direct_map(self):
        if self.dmapbase <= self.kernbase < self.dmapend:
            return None          # overlapping maps: the kernel map must win
        return (self.dmapbase, self.dmapend, 0, self.index.find)

    def walk_pages(self) -> Optional[Iterator[KvmPage]]:
        if self.version == 1:
            return None
        return self._walk()

    def _walk(self) -> Iterator[KvmPage]:
        # Pages reached through the kernel map, then the same pages through the
        # direct map (libkvm's second pass).  A set, not a bitmap-sized array:
        # memory follows the pages found, not the size the header claims.
        seen = set()
        nbits = self.index.nbits
        for va, pa, size, e in self.pt.leaves():
            off = self.index.find(pa)
            yield self.page(pa, va, self.dmapbase + pa, _prot(e), size, off)
            bit = self.index.bit_of(pa)
            if bit is not None and bit < nbits:
                seen.add(bit)
        for bit in sorted(seen):
            pa = self.index.pa_of(bit)
            if pa is None or self.dmapbase + pa + 4096 > self.dmapend:
                return
            yield self.page(pa, 0, self.dmapbase + pa, VM_PROT_READ | VM_PROT_WRITE, 4096,
                            self.index.find(pa))


class Amd64Elf(Backend):
    """Full physical-memory ELF dump, translated through the kernel's PML4."""

    arch = "amd64"
    format = "ELF full dump"
    fn = "_amd64_vatop"

    def __init__(self, core, kernel, resolve) -> None:
        super().__init__(core, kernel, resolve)
        _ident, segs = read_phdrs(core, kernel)
        self.segs = PhysSegments(core, segs)
        kernbase = self.need("kernbase", "bad namelist - no kernbase")
        kpml4phys = self.need("KPML4phys", "bad namelist - no KPML4phys")
        raw = self.phys(kpml4phys - kernbase, 8)
        if raw is None:
            raise KvmError("cannot read KPML4phys", path=core.path)
        pml4 = struct.unpack("<Q", raw)[0] & PG_FRAME
        if self.phys(pml4, 4096) is None:
            raise KvmError("cannot read KPML4phys", path=core.path)
        f = self.fn
        levels = [Level(39, 9, _dir_pml4, _frame, f"{f}: pml4e not valid"),
                  Level(30, 9, _dir, _frame_dir(PG_1GB_FRAME), f"{f}: pdpe not valid"),
                  Level(21, 9, _dir, _frame_dir(PG_PS_FRAME), f"{f}: pde not valid"),
                  Level(12, 9, _pte, _frame, f"{f}: pte not valid")]
        self.pt = PageTable(TableRoot(pml4), levels, "little", self.phys,
                            lambda pa: f"{f}: bootstrap data not in dump")

    def phys(self, pa: int, size: int) -> Optional[bytes]:
        hit = self.segs.find(pa)
        if hit is None or hit[1] < size:
            return None
        off = hit[0]
        return self.core.mm[off:off + size]

    @untranslatable
    def kvatop(self, va: int) -> Tuple[int, int]:
        pa, span = self.pt.translate(va)
        hit = self.segs.find(pa)
        if hit is None:
            raise self.fail(va, f"{self.fn}: address not in dump")
        return hit[0], min(span, hit[1])


def _dir_pml4(e: int) -> int:
    return TABLE if e & PG_V else INVALID


def _native(_ident) -> bool:
    return host_is("amd64")


register(ArchSpec("amd64 minidump", "amd64", 64, EM_X86_64, True, Amd64Minidump, _native))
register(ArchSpec("amd64", "amd64", 64, EM_X86_64, False, Amd64Elf, _native))

__all__ = ["Amd64Minidump", "Amd64Elf", "sign_extend"]
