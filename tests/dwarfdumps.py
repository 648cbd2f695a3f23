"""Dumps whose kernels have DWARF, with what the generator wrote into them.

``DWARF_DUMPS`` names them; the ``dwarf_dump`` fixture (import it into a test
module) builds each once per session:

* ``example-amd64``: the committed examples/kernel.gz + vmcore.0.gz, expectations
  from a fresh run of the generator that made them (byte-identical, see
  test_example.test_rebuild);
* ``fixture-arm64``: ``default_spec("arm64")`` plus the vmstat content, DWARF from
  examples/src compiled with the cross compiler (fixturegen.dwarfkernel).

When per-architecture examples (examples/<arch>/) land, add them to BUILDERS.
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


def _example(d: Path) -> DwarfDump:
    from fixturegen.example import build_example
    for name in ("kernel", "vmcore.0"):
        with gzip.open(ROOT / "examples" / f"{name}.gz") as src, open(d / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    fx = build_example(str(d / "gen"))
    assert (d / "vmcore.0").read_bytes() == Path(fx.core_path).read_bytes(), \
        "examples/vmcore.0.gz is stale: run python3 examples/build.py"
    k = fx.manifest.kstate
    return DwarfDump("example-amd64", "amd64", str(d / "kernel"), str(d / "vmcore.0"), k,
                     k.extras["vmstat"])


def _arm64(d: Path) -> DwarfDump:
    from fixturegen import build
    from fixturegen.dwarfkernel import add_dwarf, toolchain_missing
    from fixturegen.kernelstate import default_spec
    from fixturegen.vmstat import Vmstat
    missing = toolchain_missing("arm64")
    assert not missing, f"{missing} not installed (scripts/bootstrap.sh installs it)"
    fx = build("arm64", "minidump", 2, str(d), kstate=default_spec("arm64", extras=[Vmstat()]))
    add_dwarf(fx)
    k = fx.manifest.kstate
    return DwarfDump("fixture-arm64", "arm64", fx.kernel_path, fx.core_path, k,
                     k.extras["vmstat"])


BUILDERS: Dict[str, Callable[[Path], DwarfDump]] = {
    "example-amd64": _example, "fixture-arm64": _arm64,
}
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
