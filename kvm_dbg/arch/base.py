"""The backend contract and the registry of (probe, open) pairs, as libkvm's
``struct kvm_arch`` table.

A backend turns a kernel virtual address into a file offset.  The registry
chooses one from the kernel's ELF identity and whether the core is a
minidump (decided from the core's first 8 bytes, never by probe order).
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple

from ..corefile import CoreFile
from ..elfcore import PhysSegments, Segment, read_phdrs
from ..elfkernel import ElfIdent
from ..errors import KvmError, invalid_address
from ..pagetable import PageTable, Untranslatable

VM_PROT_READ, VM_PROT_WRITE, VM_PROT_EXECUTE = 1, 2, 4
LIBKVM_WALK_PAGES_VERSION = 2

#: A ``Prot`` rule: (mask, wanted) grants the right when ``bool(e & mask) == wanted``.
Rule = Tuple[int, bool]
ALWAYS: Rule = (0, False)
NEVER: Rule = (0, True)


def if_set(mask: int) -> Rule:
    """Granted when any bit of ``mask`` is set."""
    return (mask, True)


def if_clear(mask: int) -> Rule:
    """Granted when no bit of ``mask`` is set."""
    return (mask, False)


class Prot:
    """An architecture's VM_PROT_* of a page-table entry, as data: one rule per right."""

    __slots__ = ("fixed", "tests")

    def __init__(self, read: Rule = ALWAYS, write: Rule = NEVER, execute: Rule = NEVER) -> None:
        rules = ((VM_PROT_READ, read), (VM_PROT_WRITE, write), (VM_PROT_EXECUTE, execute))
        self.fixed = sum(bit for bit, (mask, want) in rules if not mask and not want)
        self.tests = tuple((bit, mask, want) for bit, (mask, want) in rules if mask)

    def __call__(self, e: int) -> int:
        p = self.fixed
        for bit, mask, want in self.tests:
            if (e & mask != 0) is want:
                p |= bit
        return p


@dataclass(frozen=True)
class KvmPage:
    """One record of ``kvm_walk_pages`` (libkvm's ``struct kvm_page`` v2)."""

    kp_version: int
    kp_paddr: int
    kp_kmap_vaddr: int
    kp_dmap_vaddr: int
    kp_prot: int
    kp_offset: int
    kp_len: int


class Backend:
    """Per-format translation state.  Subclasses set the class attributes
    and implement ``kvatop``; the rest has sensible defaults."""

    arch = "?"
    format = "?"
    page_size = 4096
    kerndisp = 0
    #: (offset, size) of a minidump's message-buffer section
    msgbuf_section: Optional[Tuple[int, int]] = None

    def __init__(self, core: CoreFile, kernel: ElfIdent,
                 resolve: Callable[[str], Optional[int]]) -> None:
        self.core = core
        self.kernel = kernel
        self.resolve = resolve
        self.order = kernel.byteorder

    def kvatop(self, va: int) -> Tuple[int, int]:
        """(file offset, contiguous bytes available from ``va``); raises KvmError."""
        raise NotImplementedError

    def kvatop_run(self, va: int, size: int) -> Tuple[int, int]:
        """Like ``kvatop`` (same errors for ``va``) but reports, when the pages
        after ``va``'s continue it in the file, the whole run: bulk reads copy
        it in one slice.  At least ``size`` bytes when that many are
        contiguous (more is allowed); fewer where the run ends."""
        return self.page_run(va, size)

    def page_run(self, va: int, size: int) -> Tuple[int, int]:
        """``kvatop_run`` for any format: ``kvatop`` page after page while the
        file offsets continue (formats with page tables or a bitmap override
        ``kvatop_run`` with a one-pass version)."""
        off, n = self.kvatop(va)
        while 0 < n < size and not (va + n) & 0xFFF:
            try:
                noff, nn = self.kvatop(va + n)
            except KvmError:
                break
            if noff != off + n or nn <= 0:
                break
            n += nn
        return off, n

    def walk_pages(self) -> Optional[Iterator[KvmPage]]:
        """The page records, or None when this format has no walker."""
        return None

    # -- helpers for subclasses ------------------------------------------
    def fail(self, va: int, hard: str = "") -> KvmError:
        return invalid_address(va, hard or None)

    def lookup(self, name: str) -> Optional[int]:
        """A symbol's value, or None if the resolver does not know it."""
        return self.resolve(name)

    def need(self, name: str, message: str) -> int:
        """A symbol the format needs at open, or the libkvm error."""
        value = self.lookup(name)
        if value is None:
            raise KvmError(message, path=self.core.path)
        return value

    def page(self, pa: int, kp_kmap: int, kp_dmap: int, prot: int, length: int,
             offset: Optional[int]) -> KvmPage:
        return KvmPage(LIBKVM_WALK_PAGES_VERSION, pa, kp_kmap, kp_dmap, prot,
                       -1 if offset is None else offset, length)


def untranslatable(fn):
    """Turn the walker's ``Untranslatable`` into libkvm's error pair."""
    def wrapper(self, va: int, *args):
        try:
            return fn(self, va, *args)
        except Untranslatable as u:
            raise self.fail(va, u.hard) from None
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class ElfPhysBackend(Backend):
    """A full physical-memory ELF dump translated through the kernel's page
    table: subclasses find the table and set ``self.pt``."""

    format = "ELF full dump"
    #: libkvm's hard message when a translated address is not in the dump
    not_in_dump = ""
    pt: PageTable
    phdrs: List[Segment]

    def __init__(self, core: CoreFile, kernel: ElfIdent,
                 resolve: Callable[[str], Optional[int]]) -> None:
        super().__init__(core, kernel, resolve)
        _ident, self.phdrs = read_phdrs(core, kernel)
        self.segs = PhysSegments(core, self.phdrs)

    def phys(self, pa: int, size: int) -> Optional[bytes]:
        """``size`` bytes at a physical address inside one segment, or None."""
        hit = self.segs.find(pa)
        if hit is None or hit[1] < size:
            return None
        return self.core.mm[hit[0]:hit[0] + size]

    @untranslatable
    def kvatop(self, va: int) -> Tuple[int, int]:
        pa, span = self.pt.translate(va)
        hit = self.segs.find(pa)
        if hit is None:
            raise self.fail(va, self.not_in_dump)
        return hit[0], min(span, hit[1])

    @untranslatable
    def kvatop_run(self, va: int, size: int) -> Tuple[int, int]:
        """The physically contiguous leaves from ``va`` (at least to the end of
        its own leaf), as far as the PT_LOAD segments holding them continue in
        the file."""
        pa, span = self.pt.translate_run(va, size)
        hit = self.segs.run(pa, span)
        if hit is None:
            raise self.fail(va, self.not_in_dump)
        return hit[0], min(span, hit[1])


# -- registry -------------------------------------------------------------

@dataclass(frozen=True)
class ArchSpec:
    """One registry entry: what kernel and core it claims, how to open."""

    name: str                        # e.g. 'amd64 minidump'
    arch: str                        # 'amd64'
    elfclass: Optional[int]          # None: any
    machine: int
    minidump: bool
    open: Callable[[CoreFile, ElfIdent, Callable[[str], Optional[int]]], Backend]
    native: Callable[[ElfIdent], bool]
    etype: Optional[int] = 2         # ET_EXEC; None: not checked; 3 for powerpc
    extra: Callable[[ElfIdent], bool] = lambda ident: True


REGISTRY: List[ArchSpec] = []


def register(spec: ArchSpec) -> ArchSpec:
    REGISTRY.append(spec)
    return spec


def probe(kernel: ElfIdent, is_minidump: bool) -> Optional[ArchSpec]:
    """The backend for this kernel/core pair, or None ("unsupported architecture")."""
    _load_all()
    for spec in REGISTRY:
        if spec.minidump != is_minidump or spec.machine != kernel.machine:
            continue
        if spec.elfclass is not None and spec.elfclass != kernel.elfclass:
            continue
        if spec.etype is not None and spec.etype != kernel.type:
            continue
        if spec.extra(kernel):
            return spec
    return None


def _load_all() -> None:
    if REGISTRY:
        return
    # Registration side effects; a module that fails to import is a broken
    # installation, reported as such, never "unsupported architecture".
    from . import amd64, arm, arm64, i386, mips, powerpc, powerpc64, riscv  # noqa: F401


# -- host identity for the "native" predicates ----------------------------

def host_machine() -> str:
    """Normalised host architecture: amd64, i386, arm64, arm, riscv, powerpc64, powerpc, mips."""
    m = platform.machine().lower()
    table = {"x86_64": "amd64", "amd64": "amd64", "i386": "i386", "i486": "i386",
             "i586": "i386", "i686": "i386", "x86": "i386", "aarch64": "arm64",
             "arm64": "arm64", "riscv64": "riscv", "ppc64": "powerpc64",
             "ppc64le": "powerpc64", "powerpc64": "powerpc64", "powerpc64le": "powerpc64",
             "ppc": "powerpc", "powerpc": "powerpc", "mips": "mips", "mips64": "mips",
             "mipsel": "mips", "mips64el": "mips"}
    if m.startswith("arm"):
        return "arm"
    name = table.get(m, m)
    # A 32-bit Python on a 64-bit kernel behaves as the 32-bit host it emulates.
    if name == "amd64" and sys.maxsize < 2 ** 32:
        return "i386"
    return name


def host_is(arch: str, order: Optional[str] = None) -> bool:
    return host_machine() == arch and (order is None or sys.byteorder == order)
