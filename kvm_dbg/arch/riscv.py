"""riscv (64-bit): minidumps v1-v2, Sv39/Sv48 kernels (formats.md §5.3).

The pmap section is a flat array of L3 PTEs from kernbase (superpages are
synthesized by the writer), so Sv39 and Sv48 dumps read the same way.
libkvm's second, direct-map pass of the page walk covers an empty local
bitmap: the walk is the kernel map's leaves only."""

from __future__ import annotations

from typing import Sequence

from ..elfkernel import EM_RISCV
from ..pagetable import INVALID, LEAF, Level
from .base import ArchSpec, Prot, host_is, if_set, register
from .minidump_common import DirectMapMinidump

PTE_V, PTE_R, PTE_W, PTE_X = 0x1, 0x2, 0x4, 0x8
PTE_RWX = PTE_R | PTE_W | PTE_X
PPN_SHIFT = 10


def _l3(e: int) -> int:
    return LEAF if e & PTE_V and e & PTE_RWX else INVALID


def _frame(e: int) -> int:
    return (e >> PPN_SHIFT) << 12      # libkvm does not mask Svpbmt/N bits


class RiscvMinidump(DirectMapMinidump):
    arch = "riscv"
    magic = b"minidump FreeBSD/riscv"
    header_size = 80
    fields = (("version", 24, "I"), ("msgbufsize", 28, "I"), ("bitmapsize", 32, "I"),
              ("pmapsize", 36, "I"), ("kernbase", 40, "Q"), ("dmapphys", 48, "Q"),
              ("dmapbase", 56, "Q"), ("dmapend", 64, "Q"))
    version_fields = {2: (("dumpavailsize", 72, "I"),)}
    max_version = 2
    fn = "_riscv_minidump_vatop"
    prot = Prot(write=if_set(PTE_W), execute=if_set(PTE_X))

    def levels(self) -> Sequence[Level]:
        return [Level(12, 0, _l3, _frame, f"{self.fn}: pte not valid")]


register(ArchSpec("riscv minidump", "riscv", 64, EM_RISCV, True, RiscvMinidump,
                  lambda ident: host_is("riscv")))
