"""arm64 (aarch64): minidumps v1-v3 with 4K or 16K pages (formats.md §5.1)."""

from __future__ import annotations

from typing import Sequence

from ..elfkernel import EM_AARCH64
from ..errors import KvmError
from ..pagetable import INVALID, LEAF, Level, frame_mask
from .base import ArchSpec, Prot, host_is, if_clear, register
from .minidump_common import DirectMapMinidump

L3_PAGE = 3
ATTR_MASK = 0xFFFC000000000FFF
ATTR_AP_RO = 1 << 7
ATTR_XN = (1 << 53) | (1 << 54)      # PXN | UXN
PAGE_SIZE_FLAGS = {0: 4096, 1: 16384}


def _l3(e: int) -> int:
    return LEAF if e & 3 == L3_PAGE else INVALID


class Arm64Minidump(DirectMapMinidump):
    arch = "arm64"
    magic = b"minidump FreeBSD/arm64"
    header_size = 80
    fields = (("version", 24, "I"), ("msgbufsize", 28, "I"), ("bitmapsize", 32, "I"),
              ("pmapsize", 36, "I"), ("kernbase", 40, "Q"), ("dmapphys", 48, "Q"),
              ("dmapbase", 56, "Q"), ("dmapend", 64, "Q"))
    version_fields = {2: (("dumpavailsize", 72, "I"),),
                      3: (("dumpavailsize", 72, "I"), ("flags", 76, "I"))}
    max_version = 3
    fn = "_aarch64_minidump_vatop"
    prot = Prot(write=if_clear(ATTR_AP_RO), execute=if_clear(ATTR_XN))

    def choose_page_size(self, h: dict) -> int:
        flag = h.get("flags", 0) & 3 if self.version >= 3 else 0
        if flag not in PAGE_SIZE_FLAGS:
            raise KvmError(f"unknown page size flag {flag:x}", path=self.core.path)
        return PAGE_SIZE_FLAGS[flag]

    def setup(self) -> None:
        if self.page_size != 4096:
            self.format += f" ({self.page_size // 1024}K pages)"
        super().setup()

    def levels(self) -> Sequence[Level]:
        return [Level(self.page_size.bit_length() - 1, 0, _l3,
                      frame_mask(~ATTR_MASK & 0xFFFFFFFFFFFFFFFF), f"{self.fn}: pde not valid")]


register(ArchSpec("aarch64 minidump", "arm64", 64, EM_AARCH64, True, Arm64Minidump,
                  lambda ident: host_is("arm64")))
