"""Per-CPU data (sys/sys/pcpu.h): ``pcpu_find``, ``CPU_FOREACH``, dynamic per-CPU
variables (``DPCPU_ID_PTR``/``DPCPU_ID_GET``/``DPCPU_SUM``) and UMA per-CPU
allocations (``zpcpu_get_cpu``, used by counter(9) and malloc statistics).

A DPCPU variable ``n`` is ``pcpu_entry_n`` in the kernel's ``set_pcpu`` linker set;
CPU ``i``'s copy is at ``dpcpu_off[i] + &pcpu_entry_n``.  A UMA per-CPU allocation
has one copy per CPU, ``UMA_PCPU_ALLOC_SIZE`` (a page) apart; on amd64 the kernel
stores it as an offset from ``__pcpu`` (machine/pcpu_aux.h ``zpcpu_offset_cpu``).
Module DPCPU variables (outside the kernel's set) are not handled.
"""

from __future__ import annotations

from typing import Any, Iterator

from ._common import has_symbol, symbol_address

UMA_PCPU_ALLOC_SIZE = 4096


def mp_maxid(prog: Any) -> int:
    """The highest CPU id (``mp_maxid``; ``mp_ncpus - 1`` on kernels without it)."""
    if has_symbol(prog, "mp_maxid"):
        return prog.read_u32(symbol_address(prog, "mp_maxid"))
    return prog.read_u32(symbol_address(prog, "mp_ncpus")) - 1


def pcpu_find(prog: Any, cpu: int) -> Any:
    """``pcpu_find(cpuid)``: ``cpuid_to_pcpu[cpu]`` (``struct pcpu *``, NULL if absent)."""
    return prog["cpuid_to_pcpu"][cpu]


def CPU_FOREACH(prog: Any) -> Iterator[int]:
    """``CPU_FOREACH(i)``: the ids 0..mp_maxid of the CPUs present (``cpuid_to_pcpu``
    non-NULL, as the kernel's ``CPU_ABSENT``)."""
    table = prog["cpuid_to_pcpu"]
    for cpu in range(mp_maxid(prog) + 1):
        if table[cpu].value_():
            yield cpu


def DPCPU_ID_PTR(prog: Any, cpu: int, name: str) -> Any:
    """``DPCPU_ID_PTR(cpu, name)``: pointer to CPU ``cpu``'s copy of DPCPU variable
    ``name`` (``pcpu_entry_<name>``)."""
    import drgn
    var = prog["pcpu_entry_" + name]
    addr = prog["dpcpu_off"][cpu].value_() + var.address_
    return drgn.Object(prog, prog.pointer_type(var.type_), value=addr & _mask(prog))


def DPCPU_ID_GET(prog: Any, cpu: int, name: str) -> Any:
    """``DPCPU_ID_GET(cpu, name)``: CPU ``cpu``'s value of DPCPU variable ``name``."""
    return DPCPU_ID_PTR(prog, cpu, name)[0]


def DPCPU_SUM(prog: Any, name: str) -> int:
    """``DPCPU_SUM(name)``: the sum over ``CPU_FOREACH`` of an integer DPCPU variable."""
    return sum(DPCPU_ID_GET(prog, cpu, name).value_() for cpu in CPU_FOREACH(prog))


def _mask(prog: Any) -> int:
    """All-ones of the kernel's pointer width (addresses wrap, as in C)."""
    import drgn
    return (1 << (64 if prog.platform.flags & drgn.PlatformFlags.IS_64_BIT else 32)) - 1


def zpcpu_offset_cpu(prog: Any, cpu: int) -> int:
    """The kernel's ``zpcpu_offset_cpu(cpu)``: ``&__pcpu[0]`` plus a page per CPU on
    amd64 (``__pcpu`` is a pointer there since FreeBSD 13), a page per CPU elsewhere."""
    import drgn
    base = 0
    if has_symbol(prog, "__pcpu"):
        pcpu = prog["__pcpu"]
        if pcpu.type_.unaliased_kind() == drgn.TypeKind.POINTER:
            base = pcpu.value_()
    return base + UMA_PCPU_ALLOC_SIZE * cpu


def zpcpu_get_cpu(ptr: Any, cpu: int) -> Any:
    """``zpcpu_get_cpu(base, cpu)``: CPU ``cpu``'s copy of a UMA per-CPU allocation
    (same pointer type as ``ptr``)."""
    import drgn
    prog = ptr.prog_
    addr = (ptr.value_() + zpcpu_offset_cpu(prog, cpu)) & _mask(prog)
    return drgn.Object(prog, ptr.type_, value=addr)
