"""ELF full dumps: the program-header map from physical address to file offset.

FreeBSD's generic dumper writes one PT_LOAD per physical memory chunk
(formats.md §6.1).  Segments are sorted once at open; a lookup is a bisect.
"""

from __future__ import annotations

import bisect
import struct
from typing import List, NamedTuple, Optional, Tuple

from .corefile import CoreFile
from .elfkernel import ET_CORE, ElfIdent, read_ident
from .errors import KvmError

PT_LOAD = 1
PT_LOOS = 0x60000000
_MAX_PHDRS = 65536


class Segment(NamedTuple):
    """One program header (a tuple: 65535 of them must parse quickly)."""

    type: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int


def read_phdrs(core: CoreFile, kernel: ElfIdent, base: int = 0) -> Tuple[ElfIdent, List[Segment]]:
    """Validate an ELF core against the kernel and return its program headers."""
    try:
        ident = read_ident(core.head(base + 64)[base:], "core")
    except KvmError:
        raise KvmError("invalid core", path=core.path) from None
    if ident.elfclass != kernel.elfclass or ident.type != ET_CORE or \
            ident.machine != kernel.machine:
        raise KvmError("invalid core", path=core.path)
    e = "<" if ident.byteorder == "little" else ">"
    hdr = core.head(base + 64)[base:]
    if ident.elfclass == 64:
        phoff, = struct.unpack_from(e + "Q", hdr, 32)
        phentsize, phnum = struct.unpack_from(e + "HH", hdr, 54)
        fmt, need = e + "IIQQQQQQ", 56
    else:
        phoff, = struct.unpack_from(e + "I", hdr, 28)
        phentsize, phnum = struct.unpack_from(e + "HH", hdr, 42)
        fmt, need = e + "IIIIIIII", 32
    if phnum == 0 or phnum > _MAX_PHDRS or phentsize < need:
        raise KvmError("invalid core: bad program header table", path=core.path)
    if not core.has(base + phoff, phentsize * phnum):
        raise KvmError("invalid core: program headers beyond end of file", path=core.path)
    start = base + phoff
    if phentsize == need:
        raws = struct.iter_unpack(fmt, core.mm[start:start + phnum * need])
    else:
        raws = (struct.unpack_from(fmt, core.mm, start + i * phentsize) for i in range(phnum))
    # Only PT_LOAD and OS-specific entries (arm's PT_DUMP_DELTA) are ever used.
    if ident.elfclass == 64:
        segs = [Segment(t, off + base, va, pa, fs, ms) for t, _f, off, va, pa, fs, ms, _a in raws
                if t == PT_LOAD or t >= PT_LOOS]
    else:
        segs = [Segment(t, off + base, va, pa, fs, ms) for t, off, va, pa, fs, ms, _f, _a in raws
                if t == PT_LOAD or t >= PT_LOOS]
    return ident, segs


class PhysSegments:
    """Physical address -> file offset through PT_LOAD headers."""

    def __init__(self, core: CoreFile, segs: List[Segment], by_vaddr: bool = False) -> None:
        self.core = core
        key = (lambda s: s.vaddr) if by_vaddr else (lambda s: s.paddr)
        usable = [s for s in segs if s.memsz > 0 and s.type == PT_LOAD]
        usable.sort(key=key)
        self.starts = [key(s) for s in usable]
        self.segs = usable
        self.key = key

    def find(self, pa: int) -> Optional[Tuple[int, int]]:
        """(file offset, bytes available contiguously) for ``pa``, or None."""
        i = bisect.bisect_right(self.starts, pa) - 1
        if i < 0:
            return None
        s = self.segs[i]
        rel = pa - self.starts[i]
        if rel >= min(s.memsz, s.filesz):
            return None
        off = s.offset + rel
        avail = min(s.filesz - rel, self.core.size - off)
        if avail <= 0:
            return None              # truncated core
        return off, avail

    def run(self, pa: int, size: int) -> Optional[Tuple[int, int]]:
        """``find``, continued into the next segments while they follow on in
        both address and file (up to ``size`` bytes, if that many)."""
        hit = self.find(pa)
        if hit is None:
            return None
        off, n = hit
        while n < size:
            nxt = self.find(pa + n)
            if nxt is None or nxt[0] != off + n:
                break
            n += nxt[1]
        return off, n

    def ranges(self) -> List[Tuple[int, int]]:
        return [(self.key(s), self.key(s) + s.memsz) for s in self.segs]
