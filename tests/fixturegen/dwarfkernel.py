"""DWARF for fixture kernels of other architectures, until examples/<arch>/ exist.

examples/build.py links the example's C (examples/src) at the addresses the
generator chose, for amd64.  For another architecture this compiles the same
sources with its cross compiler, links their *data* at the generator's addresses
with build.py's own linker script (functions stay the generator's: their names
differ per architecture), checks every placed symbol, and adds the resulting
``.debug_*`` sections to the generator's kernel file.  The result is a kernel with
the generator's symbol table and the C sources' types and variables - what a
``kernel.debug`` gives kgdb and drgn.  Usage::

    fx = build("arm64", "minidump", 2, tmp, kstate=default_spec("arm64", extras=[Vmstat()]))
    add_dwarf(fx)          # fx.kernel_path now has DWARF
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Tuple

from elftools.elf.elffile import ELFFile

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: architecture -> (toolchain prefix, ld emulation, flags replacing x86's code model)
TOOLCHAINS: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "arm64": ("aarch64-linux-gnu-", "aarch64linux", ()),
}
X86_ONLY = ("-mcmodel=kernel", "-mno-red-zone")


class DwarfBuildError(Exception):
    pass


def _example_build():
    """examples/build.py as a module (its helpers are reused, not copied)."""
    spec = importlib.util.spec_from_file_location("example_build", EXAMPLES / "build.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def toolchain_missing(arch: str) -> str:
    """'' if the cross toolchain for ``arch`` is installed, else what is missing."""
    prefix = TOOLCHAINS[arch][0]
    missing = [t for t in ("gcc", "ld", "objcopy") if not shutil.which(prefix + t)]
    return ", ".join(prefix + t for t in missing)


def add_dwarf(fx) -> str:
    """Give ``fx.kernel_path`` the DWARF of examples/src compiled for ``fx.arch``;
    returns the path.  DwarfBuildError if a symbol would not land where the dump
    has it."""
    eb = _example_build()
    prefix, emulation, extra = TOOLCHAINS[fx.arch]
    with tempfile.TemporaryDirectory(prefix="kvm-dwarf-") as tmp:
        work = Path(tmp)
        shutil.copytree(EXAMPLES / "src", work / "src")
        (work / "vers.c").write_text(eb.vers_c(fx))
        (work / "check.c").write_text(eb.layout_checks(fx))
        flags = [f for f in eb.CFLAGS if f not in X86_ONLY] + list(extra) + [
            f"-ffile-prefix-map={work}=.", "-Isrc"]
        cc = prefix + "gcc"
        eb.run([cc, *flags, "-fsyntax-only", "check.c"], work)
        objs = []
        for src in eb.SOURCES + ["vers.c"]:
            objs.append(Path(src).stem + ".o")
            eb.run([cc, *flags, "-c", src, "-o", objs[-1]], work)
        defined = set()
        for o in objs:
            defined.update(eb.elf_symbols(str(work / o)))
        gen = eb.elf_symbols(fx.kernel_path)
        data = {n: v for n, v in gen.items()
                if v[2] != "STT_FUNC" and v[3] != "ABS" and n in defined}
        script = eb.linker_script(data).replace(
            "/DISCARD/ : {", "/DISCARD/ : { *(.text .text.* .data.* .bss.*)")
        (work / "kernel.ld").write_text(script)
        ldflags = [f for f in eb.LDFLAGS if f not in ("-m", "elf_x86_64")]
        eb.run([prefix + "ld", "-m", emulation, *ldflags, "-T", "kernel.ld", "-o", "linked",
                *objs], work)
        got = eb.elf_symbols(str(work / "linked"))
        bad = [f"{n}: at {got[n][0]:#x}, the dump has it at {v[0]:#x}" if n in got
               else f"{n}: not linked" for n, v in sorted(data.items())
               if n not in got or got[n][0] != v[0]]
        if bad:
            raise DwarfBuildError("DWARF kernel does not match the dump:\n  " + "\n  ".join(bad))
        adds = []
        with open(work / "linked", "rb") as f:
            for sec in ELFFile(f).iter_sections():
                if sec.name.startswith(".debug_"):
                    (work / sec.name[1:]).write_bytes(sec.data())
                    adds += ["--add-section", f"{sec.name}={work / sec.name[1:]}"]
        if not adds:
            raise DwarfBuildError("the compiled kernel has no DWARF")
        eb.run([prefix + "objcopy", *adds, fx.kernel_path, str(work / "kernel")], work)
        shutil.copyfile(work / "kernel", fx.kernel_path)
    return fx.kernel_path
