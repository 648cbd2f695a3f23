"""powerpc (32-bit, big-endian) and powerpc64 (either order) ELF "virtual"
cores (formats.md §6.6): segments are kernel virtual ranges, optionally
preceded by a 512-byte kerneldumpheader (dumps saved over TFTP)."""

from __future__ import annotations

import errno
from typing import Tuple

from ..elfcore import PhysSegments, read_phdrs
from ..elfkernel import EM_PPC, EM_PPC64
from ..errors import KvmError
from .base import ArchSpec, Backend, host_is, register

ELFOSABI_STANDALONE = 255
KDH_MAGIC = b"FreeBSD Kernel Dump"
KDH_SIZE = 512
ALL_ONES = {32: 0xFFFFFFFF, 64: (1 << 64) - 1}


class PowerpcElf(Backend):
    """Translate by looking a VA up in the segments' [p_vaddr, p_vaddr+p_memsz)."""

    format = "ELF virtual dump"

    def __init__(self, core, kernel, resolve) -> None:
        super().__init__(core, kernel, resolve)
        self.arch = "powerpc64" if kernel.elfclass == 64 else "powerpc"
        base = 0 if core.head(4) == b"\x7fELF" else self._kdh_base()
        try:
            ident, segs = read_phdrs(core, kernel, base)
        except KvmError as e:
            raise KvmError("invalid corefile", hard=e.message, path=core.path) from None
        if ident.osabi != ELFOSABI_STANDALONE or (kernel.elfclass == 32 and
                                                   ident.byteorder != "big"):
            raise KvmError("invalid corefile", hard=f"EI_OSABI {ident.osabi}, "
                           f"{ident.byteorder}-endian", path=core.path)
        self.base = base
        if base:
            self.format += " (after a kerneldumpheader)"
        # libkvm decides per translation: physical ("raw") dumps open but never read.
        self.raw = not segs or segs[0].paddr != ALL_ONES[kernel.elfclass]
        self.segs = PhysSegments(core, segs, by_vaddr=True)

    def _kdh_base(self) -> int:
        head = self.core.head(KDH_SIZE + 4)
        arch = head[20:32].split(b"\0", 1)[0].decode("latin-1")
        want = ("powerpc",) if self.kernel.elfclass == 32 else ("powerpc64", "powerpc64le")
        if len(head) < KDH_SIZE + 4 or head[:20].split(b"\0", 1)[0] != KDH_MAGIC or \
                arch not in want or head[KDH_SIZE:KDH_SIZE + 4] != b"\x7fELF":
            raise KvmError("invalid corefile", hard="neither an ELF core nor a "
                           "kerneldumpheader for this architecture", path=self.core.path)
        return KDH_SIZE

    def kvatop(self, va: int) -> Tuple[int, int]:
        if self.raw:
            raise KvmError("Raw corefile not supported", errno=errno.EFAULT, address=va)
        hit = self.segs.find(va)
        if hit is None:
            raise self.fail(va)
        return hit


def _native32(ident) -> bool:
    return host_is("powerpc")


def _native64(ident) -> bool:
    return host_is("powerpc64", ident.byteorder)


register(ArchSpec("powerpc", "powerpc", 32, EM_PPC, False, PowerpcElf, _native32, etype=3,
                  extra=lambda ident: ident.byteorder == "big"))
register(ArchSpec("powerpc64", "powerpc64", 64, EM_PPC64, False, PowerpcElf, _native64,
                  etype=3))
