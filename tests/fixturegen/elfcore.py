"""ELF full (physical memory) dumps, laid out like dumpsys_generic (formats.md §6.1).

One PT_LOAD per dump_avail range, data page-aligned after the headers. Pages the model
never populated are written as zeros (seeked over, so the file stays sparse on disk).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .elfwriter import (
    PT_LOAD,
    CoreChunk,
    CoreLayout,
    ElfIdent,
    Segment,
    core_layout,
    write_core,
)
from .machine import Machine
from .minidump import CHUNK_PAGES


@dataclass
class ElfCoreLayout:
    """Program-header layout plus file size after optional truncation."""

    core: CoreLayout
    full_size: int
    file_size: int
    page_size: int = 4096

    def offset_of(self, pa: int) -> Optional[int]:
        return self.core.pa_to_offset(pa)

    def present(self, pa: int) -> bool:
        off = self.offset_of(pa - pa % self.page_size)
        return off is not None and off + self.page_size <= self.file_size


def write_elfcore(m: Machine, path: str, truncate: Optional[int] = None,
                  extra: Sequence[Segment] = ()) -> ElfCoreLayout:
    """Write physical memory of ``m`` (its dump_avail ranges) as an ET_CORE file;
    ``extra``: program headers after the PT_LOADs (e.g. arm's PT_DUMP_DELTA)."""
    p = m.page_size
    ident = ElfIdent(m.spec.bits, m.spec.little, m.spec.e_machine)
    lay = core_layout(ident, [CoreChunk(s, e - s) for s, e in m.dump_avail], p, extra)
    loads = [s for s in lay.segments if s.p_type == PT_LOAD]
    last = max(loads, key=lambda s: s.offset)
    full = last.offset + last.filesz
    if truncate is not None and truncate < 0:
        truncate += full
    out = ElfCoreLayout(lay, full, full if truncate is None else min(truncate, full), p)
    with open(path, "wb") as f:
        write_core(f, ident, lay)
        for seg in loads:
            lo, hi = seg.paddr // p, (seg.paddr + seg.memsz) // p
            for s, e in m.populated_in(lo, hi):
                for c in range(s, e, CHUNK_PAGES):
                    f.seek(seg.offset + (c * p - seg.paddr))
                    f.write(b"".join(m.page(x) for x in range(c, min(e, c + CHUNK_PAGES))))
        f.truncate(out.file_size)
    return out
