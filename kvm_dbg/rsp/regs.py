"""Register sets per architecture, as data, and target.xml built from them.

Each table is what gdb expects for the architecture (gdb's features/*.xml:
the core feature, plus those gdb refuses to work without - MIPS cp0 and FPU,
the riscv FPU a hard-float kernel's ELF asks for), in the remote
register-number order the ``g`` packet uses. ``aliases`` are other names the
library may use for the same register (its dicts follow gdb/lldb naming, but
e.g. ``fp``/``lr`` on arm64 or ``rflags`` on amd64 are accepted). ``role``
marks pc/sp/fp: those are expedited in stop replies and tagged ``generic=``
for lldb.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple
from xml.sax.saxutils import quoteattr

from ..errors import KvmError


@dataclass(frozen=True)
class Reg:
    """One register of a target description."""

    name: str
    bitsize: int
    type: str = "int"
    group: str = "general"
    regnum: int = -1
    aliases: Tuple[str, ...] = ()
    role: str = ""
    feature: str = ""             # "": the register set's main feature


@dataclass
class RegSet:
    """A register set: gdb architecture name, feature name, registers in order."""

    arch: str
    gdb_arch: str
    feature: str
    regs: List[Reg]
    lldb_triple: str
    #: names gdb shows instead of the target description's (MIPS: r29 is "sp")
    gdb_names: Dict[str, str] = field(default_factory=dict)
    by_num: Dict[int, Reg] = field(default_factory=dict)
    offsets: Dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        num = 0
        fixed: List[Reg] = []
        for r in self.regs:
            num = r.regnum if r.regnum >= 0 else num
            fixed.append(Reg(r.name, r.bitsize, r.type, r.group, num, r.aliases, r.role,
                             r.feature or self.feature))
            num += 1
        self.regs = sorted(fixed, key=lambda r: r.regnum)
        self.by_num = {r.regnum: r for r in fixed}

    def user_name(self, reg: Reg) -> str:
        """The name gdb accepts for ``reg`` (``$name``, frame.read_register)."""
        return self.gdb_names.get(reg.name, reg.name)

    def find_role(self, role: str) -> Optional[Reg]:
        return next((r for r in self.regs if r.role == role), None)


def _seq(prefix: str, n: int, bits: int, type_: str = "int", start: int = 0,
         group: str = "general") -> List[Reg]:
    return [Reg(f"{prefix}{i}", bits, type_, group) for i in range(start, start + n)]


def _x87(first: int) -> List[Reg]:
    regs = [Reg(f"st{i}", 80, "i387_ext", "float", first + i if i == 0 else -1) for i in range(8)]
    regs += [Reg(n, 32, "int", "float") for n in
             ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")]
    return regs


_SEG = [Reg(n, 32, "int32") for n in ("cs", "ss", "ds", "es", "fs", "gs")]

AMD64 = RegSet("amd64", "i386:x86-64", "org.gnu.gdb.i386.core", [
    Reg("rax", 64), Reg("rbx", 64), Reg("rcx", 64), Reg("rdx", 64),
    Reg("rsi", 64), Reg("rdi", 64), Reg("rbp", 64, "data_ptr", role="fp"),
    Reg("rsp", 64, "data_ptr", role="sp"),
    *_seq("r", 8, 64, start=8),
    Reg("rip", 64, "code_ptr", role="pc"), Reg("eflags", 32, "int32", aliases=("rflags",)),
    *_SEG, *_x87(24),
], "x86_64-unknown-freebsd")

I386 = RegSet("i386", "i386", "org.gnu.gdb.i386.core", [
    Reg("eax", 32), Reg("ecx", 32), Reg("edx", 32), Reg("ebx", 32),
    Reg("esp", 32, "data_ptr", role="sp"), Reg("ebp", 32, "data_ptr", role="fp"),
    Reg("esi", 32), Reg("edi", 32), Reg("eip", 32, "code_ptr", role="pc"),
    Reg("eflags", 32, "int32"), *_SEG, *_x87(16),
], "i386-unknown-freebsd")

AARCH64 = RegSet("arm64", "aarch64", "org.gnu.gdb.aarch64.core", [
    *_seq("x", 29, 64),
    Reg("x29", 64, aliases=("fp",), role="fp"), Reg("x30", 64, aliases=("lr",)),
    Reg("sp", 64, "data_ptr", role="sp"), Reg("pc", 64, "code_ptr", role="pc"),
    Reg("cpsr", 32, "int32", aliases=("spsr",)),
], "aarch64-unknown-freebsd")

ARM = RegSet("arm", "arm", "org.gnu.gdb.arm.core", [
    *_seq("r", 11, 32), Reg("r11", 32, aliases=("fp",), role="fp"), Reg("r12", 32, aliases=("ip",)),
    Reg("sp", 32, "data_ptr", aliases=("r13",), role="sp"), Reg("lr", 32, aliases=("r14",)),
    Reg("pc", 32, "code_ptr", aliases=("r15",), role="pc"),
    Reg("cpsr", 32, regnum=25),
], "arm-unknown-freebsd")

_RISCV_NAMES = ["zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "fp", "s1",
                *[f"a{i}" for i in range(8)], *[f"s{i}" for i in range(2, 12)],
                "t3", "t4", "t5", "t6"]
_RISCV_FPU = "org.gnu.gdb.riscv.fpu"
RISCV = RegSet("riscv", "riscv:rv64", "org.gnu.gdb.riscv.cpu", [
    *[Reg(n, 64, "data_ptr" if n == "sp" else "int",
          aliases=(f"x{i}",) + (("s0",) if n == "fp" else ()),
          role={"sp": "sp", "fp": "fp"}.get(n, ""))
      for i, n in enumerate(_RISCV_NAMES)],
    Reg("pc", 64, "code_ptr", aliases=("sepc",), role="pc"),
    # gdb refuses a tdesc without an FPU for a hard-float (lp64d) kernel ELF.
    *[Reg(f"f{i}", 64, "ieee_double", "float", feature=_RISCV_FPU) for i in range(32)],
    *[Reg(n, 32, "int", "float", feature=_RISCV_FPU) for n in ("fflags", "frm", "fcsr")],
], "riscv64-unknown-freebsd")


def _power(bits: int, arch: str, gdb_arch: str, triple: str) -> RegSet:
    regs = _seq("r", 32, bits, "uint64" if bits == 64 else "uint32")
    regs = [Reg(r.name, r.bitsize, r.type, aliases=(r.name.replace("r", "gpr", 1),),
                role="sp" if r.name == "r1" else "") for r in regs]
    return RegSet(arch, gdb_arch, "org.gnu.gdb.power.core", [
        *regs, Reg("pc", bits, "code_ptr", regnum=64, aliases=("srr0",), role="pc"),
        Reg("msr", bits), Reg("cr", 32), Reg("lr", bits, "code_ptr"), Reg("ctr", bits),
        Reg("xer", 32),
    ], triple)


POWERPC64 = _power(64, "powerpc64", "powerpc:common64", "powerpc64-unknown-freebsd")
POWERPC = _power(32, "powerpc", "powerpc:common", "powerpc-unknown-freebsd")

_MIPS_NAMES = ["zero", "at", "v0", "v1", "a0", "a1", "a2", "a3", *[f"t{i}" for i in range(8)],
               *[f"s{i}" for i in range(8)], "t8", "t9", "k0", "k1", "gp", "sp", "s8", "ra"]


def _mips(bits: int, arch: str, gdb_arch: str, triple: str) -> RegSet:
    """gdb's mips{,64}-cpu.xml, -cp0.xml and -fpu.xml (gdb requires all three)."""
    cp0, fpu = "org.gnu.gdb.mips.cp0", "org.gnu.gdb.mips.fpu"
    single = "ieee_single" if bits == 32 else "ieee_double"
    return RegSet(arch, gdb_arch, "org.gnu.gdb.mips.cpu", [
        *[Reg(f"r{i}", bits, aliases=(n,) + (("fp",) if n == "s8" else ()),
              role={"sp": "sp", "s8": "fp"}.get(n, ""))
          for i, n in enumerate(_MIPS_NAMES)],
        Reg("status", bits, regnum=32, feature=cp0), Reg("lo", bits), Reg("hi", bits),
        Reg("badvaddr", bits, feature=cp0), Reg("cause", bits, feature=cp0),
        Reg("pc", bits, "code_ptr", role="pc"),
        *[Reg(f"f{i}", bits, single, "float", feature=fpu) for i in range(32)],
        Reg("fcsr", bits, group="float", feature=fpu), Reg("fir", bits, group="float",
                                                          feature=fpu),
    ], triple, gdb_names={f"r{i}": n for i, n in enumerate(_MIPS_NAMES)})


MIPS = _mips(32, "mips", "mips", "mips-unknown-freebsd")
MIPS64 = _mips(64, "mips64", "mips:isa64", "mips64-unknown-freebsd")

REGSETS: Dict[str, RegSet] = {r.arch: r for r in
                              (AMD64, I386, AARCH64, ARM, RISCV, POWERPC64, POWERPC, MIPS,
                               MIPS64)}
REGSETS["aarch64"] = AARCH64
REGSETS["riscv64"] = RISCV
REGSETS["x86_64"] = AMD64
#: lldb triples of the other byte order (the tables name the usual one).
_OTHER_ORDER = {"mips": "mipsel", "mips64": "mips64el", "powerpc64": "powerpc64le",
                "arm": "armeb"}


def regset_for(arch: str, ptrsize: Optional[int] = None) -> RegSet:
    """The register set for a library arch name (``Kvm.arch``; a 64-bit mips
    kernel, ``ptrsize`` 8, gets the 64-bit set)."""
    if arch == "mips" and ptrsize == 8:
        arch = "mips64"
    try:
        return REGSETS[arch]
    except KeyError:
        raise KvmError(f"no register description for architecture {arch!r}") from None


def lldb_triple(rs: RegSet, byteorder: str) -> str:
    """The register set's lldb triple for a kernel of ``byteorder``."""
    cpu, rest = rs.lldb_triple.split("-", 1)
    usual = "big" if cpu in ("mips", "mips64", "powerpc64", "powerpc") else "little"
    return f"{_OTHER_ORDER.get(cpu, cpu)}-{rest}" if byteorder != usual else rs.lldb_triple


def target_xml(rs: RegSet, with_generic: bool = True) -> str:
    """The target description document gdb/lldb fetch with qXfer:features."""
    lines = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">',
             "<target>", f"  <architecture>{rs.gdb_arch}</architecture>"]
    for feature in dict.fromkeys(r.feature for r in rs.regs):
        lines.append(f"  <feature name={quoteattr(feature)}>")
        for r in rs.regs:
            if r.feature != feature:
                continue
            extra = f' generic="{r.role}"' if with_generic and r.role else ""
            lines.append(f"    <reg name={quoteattr(r.name)} bitsize=\"{r.bitsize}\" "
                         f"type={quoteattr(r.type)} group={quoteattr(r.group)} "
                         f"regnum=\"{r.regnum}\"{extra}/>")
        lines.append("  </feature>")
    lines += ["</target>", ""]
    return "\n".join(lines)


def reg_value(rs: RegSet, reg: Reg, values: Dict[str, int]) -> Optional[int]:
    """The register's value from a library register dict, or None if unavailable."""
    for name in (reg.name, *reg.aliases):
        v = values.get(name)
        if v is not None:
            return int(v)
    return None


def encode_reg(reg: Reg, value: Optional[int], byteorder: str) -> str:
    """Hex of one register in target byte order; ``xx`` bytes when unavailable."""
    size = reg.bitsize // 8
    if value is None:
        return "xx" * size
    return (value & ((1 << reg.bitsize) - 1)).to_bytes(size, byteorder).hex()  # type: ignore[arg-type]


def encode_regs(rs: RegSet, values: Dict[str, int], byteorder: str) -> str:
    """The ``g`` reply: every register in regnum order."""
    return "".join(encode_reg(r, reg_value(rs, r, values), byteorder) for r in rs.regs)


def expedited(rs: RegSet, values: Dict[str, int], byteorder: str,
              roles: Sequence[str] = ("fp", "sp", "pc")) -> str:
    """``NN:value;`` pairs for the stop reply (only registers the dump has)."""
    out = []
    for reg in sorted((r for r in rs.regs if r.role in roles), key=lambda r: r.regnum):
        v = reg_value(rs, reg, values)
        if v is not None:
            out.append(f"{reg.regnum:x}:{encode_reg(reg, v, byteorder)};")
    return "".join(out)
