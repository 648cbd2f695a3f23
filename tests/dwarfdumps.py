"""Dumps whose kernels have DWARF, with what the generator wrote into them.

``DWARF_DUMPS`` names them; the ``dwarf_dump`` fixture (import it into a test
module) builds each once per session:

* ``example-ARCH``: the committed examples (examples/kernel.gz + vmcore.0.gz for
  amd64, examples/ARCH/ for the others: C compiled with DWARF by examples/build.py),
  expectations from a fresh run of the generator that made them (byte-identical).
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DwarfDump:
    name: str
    arch: str
    kernel: str
    core: str
    kstate: Any          # fixturegen.kernelstate.KernelExpect
    vm: Any              # fixturegen.vmstat.VmstatExpect


def _example(arch: str) -> Callable[[Path], DwarfDump]:
    """The committed example of ``arch``, checked to be what the generator makes now."""
    def build(d: Path) -> DwarfDump:
        from fixturegen.example import build_example
        src = ROOT / "examples" / ("" if arch == "amd64" else arch)
        for name in ("kernel", "vmcore.0"):
            with gzip.open(src / f"{name}.gz") as f, open(d / name, "wb") as dst:
                shutil.copyfileobj(f, dst)
        fx = build_example(str(d / "gen"), arch)
        assert (d / "vmcore.0").read_bytes() == Path(fx.core_path).read_bytes(), \
            f"{src}/vmcore.0.gz is stale: run python3 examples/build.py --arch {arch}"
        k = fx.manifest.kstate
        return DwarfDump(f"example-{arch}", arch, str(d / "kernel"), str(d / "vmcore.0"), k,
                         k.extras["vmstat"])
    return build


#: Every bundled example (examples/, examples/<arch>/).
ARCHES = ("amd64", "i386", "arm64", "arm", "riscv", "powerpc64", "powerpc", "mips")
BUILDERS: Dict[str, Callable[[Path], DwarfDump]] = {f"example-{a}": _example(a) for a in ARCHES}
DWARF_DUMPS = sorted(BUILDERS)
_built: Dict[str, DwarfDump] = {}


@pytest.fixture(scope="session")
def dwarf_dump_factory(tmp_path_factory) -> Callable[[str], DwarfDump]:
    def get(name: str) -> DwarfDump:
        if name not in _built:
            _built[name] = BUILDERS[name](tmp_path_factory.mktemp(name))
        return _built[name]
    return get


@pytest.fixture(params=DWARF_DUMPS)
def dwarf_dump(request, dwarf_dump_factory) -> DwarfDump:
    """Each DWARF dump in turn."""
    return dwarf_dump_factory(request.param)
