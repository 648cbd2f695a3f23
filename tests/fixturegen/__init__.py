"""Test-fixture generator: synthetic FreeBSD kernels + crash dumps with a manifest.

Entry point: ``build(arch, fmt, version, tmpdir, **options) -> Fixture``. Written from
the spec (docs formats.md), independently of kvm_dbg. See Manifest for what a correct
reader must see.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

from . import pagetables
from .elfcore import ElfCoreLayout, write_elfcore
from .kernel import write_kernel
from .machine import G1, K4, Machine
from .minidump import MinidumpLayout, WalkRecord, write_minidump
from .profiles import PROFILES, Profile

__all__ = ["build", "build_large", "Fixture", "Manifest", "Probe", "Hole", "PartialRead",
           "WalkRecord", "CASES"]

# Every supported (arch, fmt, version, options) combination, for parametrised tests.
CASES: List[Tuple[str, str, int, Dict[str, object]]] = [
    ("amd64", "minidump", 1, {}), ("amd64", "minidump", 2, {}), ("amd64", "minidump", 3, {}),
    ("i386", "minidump", 1, {"pae": False}), ("i386", "minidump", 1, {"pae": True}),
    ("i386", "minidump", 2, {"pae": True}), ("i386", "minidump", 2, {"pae": False}),
    ("arm64", "minidump", 1, {}), ("arm64", "minidump", 2, {}),
    ("arm64", "minidump", 3, {"page_flag": 0}), ("arm64", "minidump", 3, {"page_flag": 1}),
    ("amd64", "elf", 0, {}),
    ("i386", "elf", 0, {"pae": True, "layout": "classic"}),
    ("i386", "elf", 0, {"pae": False, "layout": "classic"}),
    ("i386", "elf", 0, {"pae": True, "layout": "fbsd12"}),
    ("i386", "elf", 0, {"pae": False, "layout": "fbsd12"}),
]


# Generators of the other architectures (module per arch; each has its own CASES).
OTHER_ARCHES = {"arm": "arm", "riscv": "riscv", "mips": "mips", "powerpc64": "ppc64",
                "powerpc": "ppc64"}


@dataclass
class Probe:
    """Reading ``len(data)`` bytes at ``va`` must return exactly ``data``."""

    va: int
    data: bytes
    kind: str


@dataclass
class Hole:
    """Reading at ``va`` must fail (kind: unmapped, gap, nodump, not_dumped, truncated,
    beyond_ram)."""

    va: int
    kind: str
    size: int = 8


@dataclass
class PartialRead:
    """A read of ``length`` bytes at ``va`` whose first ``len(data)`` bytes are readable
    (== data) and the rest is not (kind of the first failing page in ``why``)."""

    va: int
    length: int
    data: bytes
    kind: str
    why: str


@dataclass
class Manifest:
    """What a correct reader must see. Walk records use libkvm semantics; ``walk`` is
    None where kvm_walk_pages returns 0 (ELF cores, amd64 minidump v1)."""

    arch: str
    fmt: str
    version: int
    page_size: int
    probes: List[Probe] = field(default_factory=list)
    holes: List[Hole] = field(default_factory=list)
    partial: List[PartialRead] = field(default_factory=list)
    hz_addr: int = 0
    hz_value: int = 0
    version_addr: int = 0
    version_string: bytes = b""
    symbols: Dict[str, int] = field(default_factory=dict)
    walk: Optional[List[WalkRecord]] = None
    header: Dict[str, int] = field(default_factory=dict)
    offsets: Dict[str, int] = field(default_factory=dict)
    file_size: int = 0
    full_size: int = 0
    npages: int = 0
    notes: Dict[str, object] = field(default_factory=dict)

    @property
    def kstate(self):
        """kernelstate.KernelExpect when built with ``kstate=KernelSpec(...)``, else None."""
        return self.notes.get("kstate")


@dataclass
class Fixture:
    """Paths of the generated files plus the manifest and the underlying model."""

    arch: str
    fmt: str
    version: int
    kernel_path: str
    core_path: str
    manifest: Manifest
    machine: Machine
    layout: Union[MinidumpLayout, ElfCoreLayout]
    profile: Profile
    options: Dict[str, object] = field(default_factory=dict)


def _page_state(pr: Profile, fmt: str, version: int, lay, va: int) -> Tuple[Optional[str],
                                                                             Optional[bytes]]:
    """(failure kind or None, page bytes) for the page containing va."""
    m = pr.m
    p = m.page_size
    if fmt == "elf":
        if m.arch == "amd64":
            path, pa = pagetables.amd64_walk(m, pr.pml4, va)
        else:
            path, pa = pagetables.i386_walk(m, pr.top, bool(pr.notes["pae"]), va)
        if any(not lay.present(t) for t in path):
            return "truncated", None
        if pa is None:
            return "unmapped", None
    else:
        pa = m.va_to_pa(va)
        if pa is None:
            return "unmapped", None
        mp = m.mapping_at(va)
        if m.arch == "amd64" and version >= 2 and mp is not None and mp.size == K4:
            path, _ = pagetables.amd64_walk(m, pr.pml4, va)
            if not lay.present(path[-1]):
                return "truncated", None
    top = max(e for _, e in m.dump_avail)
    if not m.in_dump_avail(pa):
        return ("beyond_ram" if pa >= top else "gap"), None
    pfn = pa // p
    if fmt == "elf":
        if not lay.present(pa):
            return "truncated", None
        return None, (m.page(pfn) if m.is_populated(pfn) else bytes(p))
    if pfn in m.nodump:
        return "nodump", None
    if lay.offset_of(pa) is None:
        return "not_dumped", None
    if not lay.present(pa):
        return "truncated", None
    return None, m.page(pfn)


def _manifest(pr: Profile, fmt: str, version: int, lay) -> Manifest:
    from .multiarch import manifest

    return manifest(pr, fmt, version, lay, lambda va: _page_state(pr, fmt, version, lay, va))


def build(arch: str, fmt: str = "minidump", version: int = 0, tmpdir: str = ".",
          **options: object) -> Fixture:
    """Generate kernel + core for (arch, fmt, version) in tmpdir.

    fmt: "minidump" or "elf". Options: pae (i386), layout ("classic"/"fbsd12", i386),
    page_flag (arm64 v3: 0 = 4 KiB, 1 = 16 KiB), truncate (final size in bytes;
    negative = bytes cut from the end), truncate_pages (pages cut from the end),
    holes (bool: one mapped page left out of the bitmap), gap_page (bool: a kernel page
    in a dump_avail gap), real_kva (amd64: header kernbase 0xfffffe0000000000, 2047
    pmap pages), hz, pattern ("addr"/"stamp"), msgbuf (bytes), dump_avail (pairs),
    kstate (kernelstate.KernelSpec: processes, threads, msgbuf... -> manifest.kstate).
    """
    if arch in OTHER_ARCHES:     # arm, riscv, mips, powerpc: tests/fixturegen/<module>.py
        import importlib
        mod = importlib.import_module(f".{OTHER_ARCHES[arch]}", __name__)
        return mod.build(arch, fmt, version or (2 if fmt == "minidump" else 0), tmpdir,
                         dict(options))
    if fmt == "minidump" and not version:
        version = {"amd64": 3, "i386": 2, "arm64": 2}[arch]
    pr = PROFILES[arch](fmt, version, dict(options))
    m = pr.m
    kst = None
    if options.get("kstate") is not None:  # procs/threads/msgbuf/klds: kernelstate.py
        from .kernelstate import install
        kst = install(pr, fmt, version, options)
    os.makedirs(tmpdir, exist_ok=True)
    tag = f"{arch}-{fmt}{version if fmt == 'minidump' else ''}"
    kpath = os.path.join(tmpdir, f"kernel-{tag}")
    cpath = os.path.join(tmpdir, f"vmcore-{tag}")
    trunc = options.get("truncate")
    if options.get("truncate_pages"):
        trunc = -int(options["truncate_pages"]) * m.page_size  # type: ignore[call-overload]
    write_kernel(m, kpath, pr.text_va, pr.data_va, pr.version, pr.bss_va, pr.bss_size,
                 pr.bss_syms, pr.abs_syms, phdrs=bool(options.get("phdrs", True)))
    if kst is not None:
        kst.write_kernel(kpath, pr)
    if fmt == "elf":
        lay: Union[MinidumpLayout, ElfCoreLayout] = write_elfcore(m, cpath, trunc)
    else:
        lay = write_minidump(m, cpath, version, pae=bool(pr.notes.get("pae")), pml4=pr.pml4,
                             top=pr.top, msgbuf=options.get("msgbuf"),  # type: ignore
                             truncate=trunc, flags=int(options.get("page_flag", 0)))
    return Fixture(arch, fmt, version, kpath, cpath, _manifest(pr, fmt, version, lay), m,
                   lay, pr, dict(options))


def build_large(tmpdir: str, ram_gib: int = 64, dumped_gib: int = 4,
                runs: int = 4) -> Fixture:
    """amd64 minidump v3 of a ``ram_gib`` GiB machine with ``dumped_gib`` GiB of dumped
    direct-map pages (``runs`` contiguous runs, "stamp" page pattern), for benchmarks."""
    per = dumped_gib * G1 // runs // K4
    stride = (ram_gib * G1 // K4) // runs
    page_runs = []
    for i in range(runs):
        s = stride * i + (2 * G1 // K4 if i == 0 else 0) + 1
        page_runs.append((s, s + per))
    return build_dmap_runs(tmpdir, ram_gib * G1, page_runs)


def build_dmap_runs(tmpdir: str, ram_bytes: int, page_runs: List[Tuple[int, int]]) -> Fixture:
    """amd64 minidump v3 of a machine with ``ram_bytes`` of RAM whose dumped
    direct-map pages are the page-number ranges ``page_runs`` ("stamp" pattern)."""
    ram = [(0, 0x9F000), (0x100000, ram_bytes)]
    pr = PROFILES["amd64"]("minidump", 3, {"dump_avail": ram, "pattern": "stamp"})
    for s, e in page_runs:
        pr.m.populated_runs.append((s, e))
        pr.m.dmap_dump_runs.append((s, e))
        pr.points.append(("dmap_large", pr.m.dmap_base + s * K4 + 0x40, 0x40))
        pr.points.append(("dmap_large_end", pr.m.dmap_base + e * K4 - 8, 8))
    m = pr.m
    os.makedirs(tmpdir, exist_ok=True)
    kpath = os.path.join(tmpdir, "kernel-amd64-large")
    cpath = os.path.join(tmpdir, "vmcore-amd64-large")
    write_kernel(m, kpath, pr.text_va, pr.data_va, pr.version, pr.bss_va, pr.bss_size,
                 pr.bss_syms, pr.abs_syms)
    lay = write_minidump(m, cpath, 3, pml4=pr.pml4)
    return Fixture("amd64", "minidump", 3, kpath, cpath, _manifest(pr, "minidump", 3, lay), m,
                   lay, pr, {"large": True})
