"""Rebuild a bundled example: examples/kernel.gz + vmcore.0.gz (amd64) or
examples/<arch>/kernel.gz + vmcore.0.gz.

The dump comes from the fixture generator (tests/fixturegen/example.py). The kernel is
``SOURCES`` (examples/src, plus src/<arch>/machdep.c when the architecture has one)
compiled with gcc -g for the architecture (real DWARF types; the machine-dependent
structures come from src/<arch>/machine.h) and linked with a generated linker script
that puts every symbol at the address the generator chose.  The functions on the dump's
stacks are generated assembly stubs holding the bytes the dump has.  The build fails if
a structure layout, a symbol's address, size or type, the ELF identity or the version
string differs from what the dump holds.

Usage: ``python3 examples/build.py [--arch ARCH|all] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from elftools.elf.elffile import ELFFile

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fixturegen import kernelstate as ks  # noqa: E402
from fixturegen import vmstat  # noqa: E402
from fixturegen.example import EXAMPLES, EXTRA_BY_WIDTH, build_example  # noqa: E402

#: The C sources of every example kernel (examples/src); src/<arch>/machdep.c is added
#: for the architectures that have one.
SOURCES = ["kernel.c", "vmstat.c"]
CFLAGS = ["-std=gnu11", "-g", "-O0", "-ffreestanding", "-nostdlib", "-nostdinc", "-fno-pic",
          "-fno-common", "-fdata-sections", "-ffunction-sections",
          "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
          "-fno-eliminate-unused-debug-types", "-gno-record-gcc-switches", "-Wall", "-Werror"]
LDFLAGS = ["-nostdlib", "--build-id=none", "-z", "noexecstack", "-z", "max-page-size=0x1000",
           "-z", "norelro", "-x", "-e", "btext"]
#: Generator symbols whose size differs on purpose: hz is an int (the generator
#: gives every .bss word a pointer's size).
SIZE_OK = {"hz"}
#: Output sections: the generator's, with its .bss folded into .data.
OUT_SECTION = {".text": ".text", ".data": ".data", ".bss": ".data", ".rodata": ".rodata",
               ".kdata": ".kdata"}
PHDR = {".text": "text", ".data": "data", ".rodata": "rodata", ".kdata": "kdata"}
ELFOSABI_FREEBSD = 9
ET_DYN = 3


@dataclass(frozen=True)
class Toolchain:
    """How to build one architecture's kernel: the Debian cross compiler and linker,
    their target flags and the ELF identity the result must have."""

    prefix: str                  # "" (host tools) or the cross prefix
    cflags: Tuple[str, ...]      # target flags (compiling and assembling)
    emulation: str               # ld -m
    machine: str                 # e_machine as pyelftools names it
    elfclass: int
    little: bool

    @property
    def cc(self) -> str:
        return os.environ.get("CC", "gcc") if not self.prefix else f"{self.prefix}-gcc"

    @property
    def ld(self) -> str:
        return os.environ.get("LD", "ld") if not self.prefix else f"{self.prefix}-ld"


TOOLCHAINS: Dict[str, Toolchain] = {
    "amd64": Toolchain("", ("-mcmodel=kernel", "-mno-red-zone"), "elf_x86_64", "EM_X86_64",
                       64, True),
    "i386": Toolchain("i686-linux-gnu", ("-m32", "-march=i686"), "elf_i386", "EM_386", 32,
                      True),
    "arm64": Toolchain("aarch64-linux-gnu", ("-mgeneral-regs-only",), "aarch64elf",
                       "EM_AARCH64", 64, True),
    "arm": Toolchain("arm-linux-gnueabihf", ("-marm", "-march=armv7-a", "-mfpu=vfpv3-d16",
                                             "-mfloat-abi=hard"),
                     "armelf_linux_eabi", "EM_ARM", 32, True),
    "riscv": Toolchain("riscv64-linux-gnu", ("-march=rv64imafdc", "-mabi=lp64",
                                             "-msmall-data-limit=0"),   # sys/conf/kern.mk
                       "elf64lriscv", "EM_RISCV", 64, True),
    "powerpc64": Toolchain("powerpc64-linux-gnu", ("-mbig-endian", "-mabi=elfv2"),
                           "elf64ppc", "EM_PPC64", 64, False),
    "powerpc": Toolchain("powerpc64-linux-gnu", ("-m32", "-mbig-endian", "-G", "0"),
                         "elf32ppc", "EM_PPC", 32, False),
    "mips": Toolchain("mips-linux-gnu", ("-EB", "-mabi=32", "-march=mips32r2",
                                         "-mno-abicalls", "-G", "0"),
                      "elf32btsmip", "EM_MIPS", 32, False),
}
#: Allocated sections some assemblers add that a kernel image does not need.
DISCARD = ("*(.comment)", "*(.note.*)", "*(.eh_frame)", "*(.ARM.exidx*)",
           "*(.MIPS.abiflags)", "*(.reginfo)", "*(.pdr)", "*(.gnu.attributes)")


class BuildError(Exception):
    pass


def out_dir(arch: str) -> Path:
    """Where an architecture's committed example lives."""
    return HERE if arch == "amd64" else HERE / arch


def elf_symbols(path: str) -> Dict[str, Tuple[int, int, str, str]]:
    """{name: (value, size, type, section name or 'ABS')} of the global symbols."""
    out = {}
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for sym in elf.get_section_by_name(".symtab").iter_symbols():
            if not sym.name or sym["st_info"]["bind"] != "STB_GLOBAL":
                continue
            ndx = sym["st_shndx"]
            sec = "ABS" if ndx == "SHN_ABS" else elf.get_section(ndx).name
            out[sym.name] = (sym["st_value"], sym["st_size"], sym["st_info"]["type"], sec)
    return out


def c_string(data: bytes) -> str:
    """A C string literal for ``data`` (no NUL)."""
    out = []
    for b in data:
        ch = chr(b)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= b < 127:
            out.append(ch)
        else:
            out.append({10: "\\n", 9: "\\t"}.get(b, f"\\{b:03o}"))
    return '"' + "".join(out) + '"'


def vers_c(fx) -> str:
    """vers.c, as FreeBSD's newvers.sh writes it: the dump's version strings."""
    k = fx.manifest.kstate
    version = fx.manifest.version_string.rstrip(b"\0")
    return ("/* Generated by examples/build.py (FreeBSD: sys/conf/newvers.sh). */\n"
            f"char version[] = {c_string(version)};\n"
            f"char osrelease[32] = {c_string(k.osrelease.encode())};\n"
            f"int osreldate = {k.osreldate};\n")


def _named(prefix: str) -> Callable[[str], str]:
    return lambda reg: prefix + reg


def _table(table: Dict[str, str], default: Callable[[str], str]) -> Callable[[str], str]:
    return lambda reg: table.get(reg) or default(reg)


_PPC_PCB = _table({"cr": "pcb_cr", "r1": "pcb_sp", "r2": "pcb_toc", "lr": "pcb_lr"},
                  lambda r: f"pcb_context[{int(r[1:]) - 12}]")
_PPC_TF = _table({"pc": "srr0", "msr": "srr1"},
                 lambda r: f"fixreg[{r[1:]}]" if r[1:].isdigit() else r)
#: The C member behind each generator register name: (struct pcb, struct trapframe).
FIELDS: Dict[str, Tuple[Callable[[str], str], Callable[[str], str]]] = {
    "amd64": (_named("pcb_"), _named("tf_")),
    "i386": (_named("pcb_"), _named("tf_")),
    "arm64": (_table({"fp": "pcb_x[10]", "lr": "pcb_x[11]", "sp": "pcb_sp"},
                     lambda r: f"pcb_x[{int(r[1:]) - 19}]"),
              _table({"sp": "tf_sp", "lr": "tf_lr", "pc": "tf_elr", "fp": "tf_x[29]"},
                     lambda r: f"tf_x[{r[1:]}]")),
    "arm": (lambda r: f"pcb_regs.sf_{r}",
            _table({"cpsr": "tf_spsr", "sp": "tf_svc_sp", "lr": "tf_svc_lr"},
                   _named("tf_"))),
    "riscv": (_table({"fp": "pcb_s[0]"},
                     lambda r: f"pcb_s[{r[1:]}]" if r[0] == "s" and r[1:].isdigit()
                     else f"pcb_{r}"),
              _table({"fp": "tf_s[0]", "pc": "tf_sepc"},
                     lambda r: f"tf_{r[0]}[{r[1:]}]" if r[1:].isdigit() else f"tf_{r}")),
    "powerpc64": (_PPC_PCB, _PPC_TF),
    "powerpc": (_PPC_PCB, _PPC_TF),
    # pcb_context[PCB_REG_*]: S0..S7 0-7, SP 8, S8 9, RA 10, SR 11, GP 12, PC 13
    "mips": (_table({"sp": "pcb_context[8]", "s8": "pcb_context[9]", "ra": "pcb_context[10]",
                     "status": "pcb_context[11]", "gp": "pcb_context[12]",
                     "pc": "pcb_context[13]"},
                    lambda r: f"pcb_context[{r[1:]}]"),
             _table({"at": "ast", "status": "sr", "lo": "mullo", "hi": "mulhi"},
                    lambda r: r)),
}


def layout_checks(fx) -> str:
    """check.c: the generator's layouts as compile-time assertions on kernel.h."""
    k = fx.manifest.kstate
    f = ks.facts(k.arch, k.osreldate)
    w = f.w
    pcb_field, tf_field = FIELDS[k.arch]
    lines = ['#include "kernel.h"', "#define AT(t, m, off) CHECK(t, m, off)"]
    for table, struct in ((ks.PROC[w], "proc"), (ks.THREAD[w], "thread"),
                          (ks.KLD[w], "linker_file")):
        for field, off in table.items():
            if field == "size":
                lines.append(f"CHECK_SIZE({struct}, {off:#x});")
            else:
                name = "link.tqe_next" if (struct, field) == ("linker_file", "next") else field
                lines.append(f"AT({struct}, {name}, {off:#x});")
    for field, off in EXTRA_BY_WIDTH[w].items():
        lines.append(f"AT({'thread' if field.startswith('td_') else 'proc'}, {field}, {off:#x});")
    for reg, off in f.pcb:
        lines.append(f"AT(pcb, {pcb_field(reg)}, {off});")
    lines.append(f"CHECK_SIZE(pcb, {f.pcb_size:#x});")
    for reg, off in f.tf:
        lines.append(f"AT(trapframe, {tf_field(reg)}, {off});")
    lines.append(f"CHECK_SIZE(trapframe, {f.tf_size});")
    lines.append("AT(msgbuf, msg_ptr, 0);")
    for i, field in enumerate(("magic", "size", "wseq", "rseq", "cksum", "seqmod", "lastpri",
                               "flags")):
        lines.append(f"AT(msgbuf, msg_{field}, {w + 4 * i});")
    lines.append(f"_Static_assert(MSG_MAGIC == {ks.MSG_MAGIC:#x}, \"MSG_MAGIC\");")
    lines.append(f"_Static_assert(MAXCOMLEN == {ks.MAXCOMLEN}, \"MAXCOMLEN\");")
    lines += vmstat.layout_checks(fx.arch)
    return "\n".join(lines) + "\n"


def stubs_s(fx, gen: Dict[str, Tuple[int, int, str, str]]) -> str:
    """stubs.s: every function of the dump's stacks holding the bytes the dump has
    (and the absolute symbols, e.g. kernbase: locore.S sets them)."""
    with open(fx.kernel_path, "rb") as f:
        text = ELFFile(f).get_section_by_name(".text")
        base, data = text["sh_addr"], text.data()
    out = ["/* Generated by examples/build.py: the dump's functions (no DWARF). */"]
    for name, (value, size, typ, sec) in sorted(gen.items(), key=lambda kv: kv[1][0]):
        if sec == "ABS":
            kind = "%object" if typ == "STT_OBJECT" else "%notype"
            out += [f"\t.globl {name}", f"\t.type {name},{kind}", f"\t.set {name}, {value:#x}"]
            continue
        if sec != ".text" or typ != "STT_FUNC":
            continue
        code = data[value - base:value - base + size]
        out += [f'\t.pushsection .text.{name},"ax",%progbits', f"\t.globl {name}",
                f"\t.type {name},%function", f"{name}:"]
        out += ["\t.byte " + ",".join(f"{b:#04x}" for b in code[i:i + 16])
                for i in range(0, len(code), 16)]
        out += [f"\t.size {name},.-{name}", "\t.popsection"]
    return "\n".join(out) + "\n"


def linker_script(syms: Dict[str, Tuple[int, int, str, str]]) -> str:
    """One output section per generator section, each symbol's input section placed at
    the generator's address (``. = offset`` fails the link if it would go backwards)."""
    groups: Dict[str, List[Tuple[int, str]]] = {}
    for name, (value, _size, _type, sec) in syms.items():
        if sec != "ABS":                    # kernbase: stubs.s sets it, as locore.S does
            groups.setdefault(OUT_SECTION[sec], []).append((value, name))
    out = ["/* Generated by examples/build.py: the fixture generator's addresses. */",
           "ENTRY(btext)", "PHDRS {"]
    out += [f"  {p} PT_LOAD FLAGS({5 if p == 'text' else 4 if p == 'rodata' else 6});"
            for p in PHDR.values()]
    out += ["}", "SECTIONS {"]
    for sec in sorted(groups, key=lambda s: min(groups[s])):
        items = sorted(groups[sec])
        base = items[0][0]
        out.append(f"  {sec} {base:#x} : {{")
        for value, name in items:
            out.append(f"    . = {value - base:#x};")
            out.append(f"    KEEP(*(.text.{name} .data.{name} .bss.{name} .rodata.{name}))")
        out.append(f"  }} :{PHDR[sec]}")
    out += [f"  /DISCARD/ : {{ {' '.join(DISCARD)} }}", "}"]
    return "\n".join(out) + "\n"


def run(cmd: List[str], cwd: Path) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    except FileNotFoundError:
        raise BuildError(f"{cmd[0]}: not found (scripts/bootstrap.sh installs the Debian "
                         "cross compilers)") from None
    if r.returncode:
        raise BuildError(f"{' '.join(cmd)} failed:\n{r.stdout}")


def sources(arch: str) -> List[str]:
    """The C files of ``arch``'s kernel, relative to examples/src."""
    md = f"{arch}/machdep.c"
    return SOURCES + ([md] if (HERE / "src" / md).is_file() else [])


def compile_kernel(fx, work: Path) -> Path:
    """Compile and link examples/src with the generator's layout; returns the ELF."""
    arch = fx.manifest.kstate.arch
    tc = TOOLCHAINS[arch]
    shutil.copytree(HERE / "src", work / "src")
    (work / "vers.c").write_text(vers_c(fx))
    (work / "check.c").write_text(layout_checks(fx))
    gen = elf_symbols(fx.kernel_path)
    (work / "stubs.s").write_text(stubs_s(fx, gen))
    (work / "kernel.ld").write_text(linker_script(gen))
    flags = CFLAGS + list(tc.cflags) + [
        f"-ffile-prefix-map={work}=.", "-Isrc", f"-Isrc/{arch}",
        f"-D__FreeBSD_version={fx.manifest.kstate.osreldate}", f"-DHZ={fx.manifest.hz_value}"]
    run([tc.cc, *flags, "-fsyntax-only", "check.c"], work)
    objects = []
    for src in sources(arch) + ["vers.c"]:
        obj = Path(src).name[:-2] + ".o"
        run([tc.cc, *flags, "-c", src if src == "vers.c" else f"src/{src}", "-o", obj], work)
        objects.append(obj)
    run([tc.cc, *tc.cflags, "-c", "stubs.s", "-o", "stubs.o"], work)   # no DWARF
    out = work / "kernel"
    run([tc.ld, "-m", tc.emulation, *LDFLAGS, "-T", "kernel.ld", "-o", "kernel", *objects,
         "stubs.o"], work)
    with open(out, "r+b") as f:          # EI_OSABI: a FreeBSD kernel, like the generator's
        f.seek(7)
        f.write(bytes([ELFOSABI_FREEBSD]))
        if _header(fx.kernel_path)["e_type"] == "ET_DYN":
            # powerpc64 kernels are position-independent (relocated at boot): ET_DYN,
            # which libkvm requires; the link itself is at the generator's addresses.
            f.seek(16)
            f.write(ET_DYN.to_bytes(2, "big" if not tc.little else "little"))
    verify(fx, gen, out)
    return out


def _header(path: str):
    with open(path, "rb") as f:
        return ELFFile(f).header


def verify(fx, gen: Dict[str, Tuple[int, int, str, str]], kernel: Path) -> None:
    """Every generator symbol at the same address (and size, type) in the kernel, and
    the generator's ELF identity."""
    tc = TOOLCHAINS[fx.manifest.kstate.arch]
    got = elf_symbols(str(kernel))
    errors = []
    for name, (value, size, typ, _sec) in sorted(gen.items()):
        if name not in got:
            errors.append(f"{name}: missing (add it to examples/src)")
            continue
        v, s, t, _ = got[name]
        if v != value:
            errors.append(f"{name}: at {v:#x}, the dump has it at {value:#x}")
        if s != size and name not in SIZE_OK:
            errors.append(f"{name}: size {s}, the dump's is {size}")
        if t != typ and typ != "STT_NOTYPE":
            errors.append(f"{name}: type {t}, the dump's is {typ}")
    want = _header(fx.kernel_path)
    want_flags = want["e_flags"]
    with open(kernel, "rb") as f:
        elf = ELFFile(f)
        h = elf.header
        if (h["e_type"], h["e_machine"], elf.elfclass, elf.little_endian) != (
                want["e_type"], tc.machine, tc.elfclass, tc.little):
            errors.append(f"not an {want['e_type']} ELF{tc.elfclass} {tc.machine} file "
                          f"({'little' if tc.little else 'big'}-endian)")
        if h["e_flags"] != want_flags:
            errors.append(f"e_flags {h['e_flags']:#x}, the generator's are {want_flags:#x}")
        alloc = {s.name for s in elf.iter_sections() if s["sh_flags"] & 2}
        if alloc != set(PHDR):
            errors.append(f"unexpected allocated sections: {sorted(alloc - set(PHDR))}")
        if not elf.has_dwarf_info():
            errors.append("no DWARF")
        data = elf.get_section_by_name(".data")
        off = got["version"][0] - data["sh_addr"]
        version = data.data()[off:off + got["version"][1]]
    if version != fx.manifest.version_string:
        errors.append(f"version {version!r} != the dump's {fx.manifest.version_string!r}")
    if errors:
        raise BuildError("kernel does not match the dump:\n  " + "\n  ".join(errors))


def gzip_to(src: Path, dst: Path) -> None:
    """Deterministic gzip: no name, mtime 0."""
    with open(src, "rb") as f, open(dst, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9,
                          mtime=0) as g:
        shutil.copyfileobj(f, g)


def build(out: Path, arch: str = "amd64") -> Tuple[Path, Path]:
    """Write ``arch``'s kernel.gz and vmcore.0.gz to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kvm-example-") as tmp:
        t = Path(tmp)
        fx = build_example(str(t / "dump"), arch)
        kernel = compile_kernel(fx, t / "cc")
        gzip_to(kernel, out / "kernel.gz")
        gzip_to(Path(fx.core_path), out / "vmcore.0.gz")
    return out / "kernel.gz", out / "vmcore.0.gz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="amd64", choices=sorted(EXAMPLES) + ["all"],
                    help="architecture (default amd64; all: every one)")
    ap.add_argument("--out", type=Path, default=None,
                    help="output directory (default examples/ for amd64, examples/ARCH "
                    "otherwise; with --arch all, DIR/ARCH)")
    args = ap.parse_args()
    arches = sorted(EXAMPLES) if args.arch == "all" else [args.arch]
    for arch in arches:
        if args.out is None:
            out = out_dir(arch)
        else:
            out = args.out / arch if args.arch == "all" else args.out
        try:
            paths = build(out, arch)
        except BuildError as e:
            sys.exit(f"examples/build.py: {arch}: {e}")
        for p in paths:
            print(f"wrote {p} ({p.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
