"""arm (32-bit): minidumps v1-v2 (ARMv4/ARMv6 PTE formats) and ELF full dumps
(formats.md §5.2, §6.5).  Either byte order; entries in the kernel's order."""

from __future__ import annotations

import errno
from typing import Iterator, Optional, Tuple

from ..elfkernel import EM_ARM
from ..errors import KvmError
from ..pagetable import INVALID, LEAF, TABLE, Level, PageTable, TableRoot, Untranslatable
from .base import ArchSpec, ElfPhysBackend, KvmPage, Prot, host_is, if_clear, if_set, register
from .minidump_common import MinidumpBackend

PT_DUMP_DELTA = 0x6FB5D000
MMU_UNKNOWN, MMU_V4, MMU_V6, MMU_V6_LPAE = 0, 1, 2, 3
L2_TYPE_INV, L2_TYPE_L, L2_TYPE_S, L2_TYPE_T = 0, 1, 2, 3
L2_L_FRAME, L2_S_FRAME = 0xFFFF0000, 0xFFFFF000
L1_TYPE_S = 2
L1_S_FRAME, L1_C_FRAME = 0xFFF00000, 0xFFFFFC00
PTE2_RO, PTE2_NX = 0x80, 0x1          # ARMv6 pmap: L2_TEX1 (software RO), L2_NX
L2_S_PROT_W = 0x10                    # ARMv4 "xscale" AP0 write approximation
L1_TABLE_SIZE = 0x4000
_4G = 1 << 32


PROT_V4 = Prot(write=if_set(L2_S_PROT_W))
PROT_V6 = Prot(write=if_clear(PTE2_RO), execute=if_clear(PTE2_NX))


class ArmMinidump(MinidumpBackend):
    """Flat array of 4-byte L2-style PTEs from KERNBASE, one per 4 KiB."""

    arch = "arm"
    magic = b"minidump FreeBSD/arm"
    header_size = 56
    fields = (("version", 24, "I"), ("msgbufsize", 28, "I"), ("bitmapsize", 32, "I"),
              ("pmapsize", 36, "I"), ("kernbase", 40, "I"), ("arch", 44, "I"),
              ("mmuformat", 48, "I"))
    version_fields = {2: (("dumpavailsize", 52, "I"),)}
    max_version = 2
    entsize = 4
    bitmap_word_bits = 32
    fn = "_arm_minidump_kvatop"

    def setup(self) -> None:
        h = self.hdr
        self._check_dump_avail()
        mmu = h["mmuformat"] or MMU_V6        # 0: "safe default as 1K pages are not used"
        self.v4 = mmu == MMU_V4
        self.format += " (ARMv4)" if self.v4 else " (ARMv6)"
        self.prot = PROT_V4 if self.v4 else PROT_V6
        self.kernbase = h["kernbase"]
        # A 64 KiB entry maps (frame + (va & 0xffff)): libkvm's "convert to 4K".
        self.pt = self.flat_pagetable([Level(12, 0, self._classify, _l2_frame,
                                             f"{self.fn}: pte not valid", 4, _l2_size)],
                                      self.order)

    def _check_dump_avail(self) -> None:
        """arm's v2 writers store 64-bit pairs; reject anything else (formats.md §2.2)."""
        for start, end in self.ranges if self.hdr["dumpavailsize"] else ():
            if start >= end or end > _4G:
                raise KvmError(
                    f"dump_avail section is not a list of 64-bit [start, end) pairs "
                    f"(pair 0x{start:x}-0x{end:x}; written with 32-bit entries?)",
                    path=self.core.path)

    def _classify(self, e: int) -> int:
        t = e & 3
        if t == L2_TYPE_INV:
            return INVALID
        if t == L2_TYPE_T and self.v4:
            raise Untranslatable(f"{self.fn}: pte not supported")
        return LEAF

    def walk_pages(self) -> Optional[Iterator[KvmPage]]:
        return self._walk()

    def _walk(self) -> Iterator[KvmPage]:
        get, kb, prot = self.pmap.get, self.kernbase, self.prot
        for idx in range(self.pmap.count):
            e = get(idx)
            t = e & 3
            if t == L2_TYPE_INV or (t == L2_TYPE_T and self.v4):
                continue
            va = kb + (idx << 12)
            pa = (e & L2_L_FRAME) + (va & 0xF000) if t == L2_TYPE_L else e & L2_S_FRAME
            yield self.page(pa, va, 0, prot(e), 4096, self.index.find(pa))


# -- ELF full dump ----------------------------------------------------------

def _l1(e: int) -> int:
    if e == 0:
        return INVALID
    return LEAF if e & 3 == L1_TYPE_S else TABLE


def _l1_frame(e: int) -> int:
    return e & L1_S_FRAME if e & 3 == L1_TYPE_S else e & L1_C_FRAME


def _l2(e: int) -> int:
    return INVALID if e == 0 else LEAF


def _l2_frame(e: int) -> int:
    return e & L2_L_FRAME if e & 3 == L2_TYPE_L else e & L2_S_FRAME


def _l2_size(e: int) -> int:
    return 0x10000 if e & 3 == L2_TYPE_L else 0x1000


class ArmElf(ElfPhysBackend):
    """Physical ELF dump translated through the kernel's L1 table (formats.md §6.5)."""

    arch = "arm"

    def __init__(self, core, kernel, resolve) -> None:
        super().__init__(core, kernel, resolve)
        delta = next((s for s in self.phdrs if s.type == PT_DUMP_DELTA), None)
        if delta is not None:
            kernbase, physaddr = delta.vaddr, delta.paddr
        else:
            kernbase = self.need("kernbase", "cannot resolve kernbase")
            physaddr = self.need("physaddr", "couldn't get phys addr")
        self.kernbase, self.physaddr = kernbase, physaddr
        sym = self.need("kernel_l1pa", "bad namelist")
        raw = self.phys((sym - kernbase + physaddr) % _4G, 4)
        if raw is None:
            raise KvmError("cannot read kernel_l1pa", path=core.path)
        l1 = int.from_bytes(raw, self.order)
        if l1 >= kernbase:
            # ARMv6 pmap stores the table's kernel VA (formats.md §6.5).
            l1 = (l1 - kernbase + physaddr) % _4G
        if self.phys(l1, L1_TABLE_SIZE) is None:
            raise KvmError("cannot read l1pt", path=core.path)
        self.l1pa = l1
        levels = [Level(20, 12, _l1, _l1_frame, "", 4),
                  Level(12, 8, _l2, _l2_frame, "", 4, _l2_size)]
        self.pt = PageTable(TableRoot(l1), levels, self.order, self.phys,
                            lambda pa: "_arm_kvatop: pread")

    def fail(self, va: int, hard: str = "") -> KvmError:
        return KvmError(f"Invalid address ({va:x})", hard=hard or None, errno=errno.EFAULT,
                        address=va)

    def kvatop(self, va: int) -> Tuple[int, int]:
        if va >= _4G:
            raise self.fail(va)
        return super().kvatop(va)

    def kvatop_run(self, va: int, size: int) -> Tuple[int, int]:
        if va >= _4G:
            raise self.fail(va)
        off, n = super().kvatop_run(va, size)
        return off, min(n, _4G - va)


def _native(ident) -> bool:
    return host_is("arm", ident.byteorder)


register(ArchSpec("arm minidump", "arm", 32, EM_ARM, True, ArmMinidump, _native))
register(ArchSpec("arm", "arm", 32, EM_ARM, False, ArmElf, _native))
