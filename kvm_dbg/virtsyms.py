"""VNET and DPCPU symbols: libkvm's ``vnet_entry_`` / ``pcpu_entry_`` retries
and relocation (freebsd-src ``lib/libkvm/kvm_vnet.c``, ``kvm_pcpu.c``,
``kvm_private.c`` ``_kvm_nlist``; api.md §8.2-8.3).

A ``VNET_DEFINE(int, x)`` variable is the symbol ``vnet_entry_x`` inside the
linker set ``set_vnet``; each virtual network stack has its own copy at
``vnet_data_base + address``.  A ``DPCPU_DEFINE`` one is ``pcpu_entry_x``
inside ``set_pcpu``, with a copy per CPU at ``dpcpu_off[cpu] + address``.
A name not found as is is retried with these prefixes (one leading ``_``
dropped), and a value inside the set is relocated for the selected vnet
(vnet0 by default, as libkvm on a dump: proc0's credential's prison's vnet)
or CPU (CPU 0 by default).  Unlike libkvm this works for non-native dumps:
structure layouts come from the kernel's DWARF when it has them, else from
``struct vnet``'s layout (sys/net/vnet.h) for the dump's pointer size.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from .errors import KvmError

VNET_SYMPREFIX, DPCPU_SYMPREFIX = "vnet_entry_", "pcpu_entry_"
VNET_MAGIC_N = 0x3E0D8F29
MAX_CPUS = 1 << 16
MAX_VNETS = 1 << 16


def _base(kvm: Any, *names: str) -> Optional[int]:
    """First of ``names`` the plain lookup knows (no prefix retries)."""
    for n in names:
        v = kvm._resolve(n)
        if v is not None:
            return v
    return None


def _uint(kvm: Any, addr: int, size: int) -> int:
    return int.from_bytes(kvm.read(addr, size), kvm.byteorder)


# -- DPCPU ---------------------------------------------------------------------

@dataclass
class Dpcpu:
    start: int
    stop: int
    offsets: List[int]
    cpu: int = 0

    @property
    def maxcpus(self) -> int:
        return len(self.offsets)

    def relocate(self, value: int, mask: int) -> int:
        if value == 0 or not self.start <= value < self.stop:
            return value
        return (self.offsets[self.cpu] + value) & mask


def dpcpu_init(kvm: Any) -> Optional[Dpcpu]:
    """``_kvm_dpcpu_init``: None when the kernel has no DPCPU set or tables."""
    start = _base(kvm, "__start_set_pcpu", "___start_set_pcpu")
    stop = _base(kvm, "__stop_set_pcpu", "___stop_set_pcpu")
    off = _base(kvm, "dpcpu_off", "_dpcpu_off")
    maxc = _base(kvm, "mp_maxcpus", "_mp_maxcpus")
    if None in (start, stop, off, maxc):
        return None
    try:
        n = _uint(kvm, maxc, 4)
        if not 0 < n <= MAX_CPUS:
            return None
        raw = kvm.read(off, n * kvm.ptrsize)
    except KvmError:
        return None
    w = kvm.ptrsize
    offsets = [int.from_bytes(raw[i:i + w], kvm.byteorder) for i in range(0, len(raw), w)]
    d = Dpcpu(start, stop, offsets)
    if offsets[0] == 0:         # libkvm selects CPU 0 silently; keep it even if absent
        d.cpu = 0
    return d


def dpcpu_setcpu(d: Optional[Dpcpu], cpu: int) -> None:
    """``_kvm_dpcpu_setcpu`` with libkvm's messages."""
    if d is None:
        raise KvmError("_kvm_dpcpu_setcpu: not initialized")
    if cpu < 0 or cpu >= d.maxcpus:
        raise KvmError(f"_kvm_dpcpu_setcpu: CPU {cpu} too big", errno=errno.EINVAL)
    if d.offsets[cpu] == 0:
        raise KvmError(f"_kvm_dpcpu_setcpu: CPU {cpu} not found", errno=errno.ENOENT)
    d.cpu = cpu


# -- VNET ------------------------------------------------------------------------

@dataclass
class Vnet:
    start: int
    stop: int
    current: int          # the struct vnet selected
    base: int             # its vnet_data_base

    def relocate(self, value: int, mask: int) -> int:
        if value == 0 or not self.start <= value < self.stop:
            return value
        return (self.base + value) & mask


def vnet_layout(kvm: Any) -> Tuple[int, int]:
    """(offset of vnet_magic_n, offset of vnet_data_base) in ``struct vnet``:
    DWARF when the kernel has it, else sys/net/vnet.h's layout (LIST_ENTRY,
    four u_ints, a pointer, the base) for the pointer size."""
    from .kstate.offsets import dwarf_offsets
    got = dwarf_offsets(kvm, "vnet", ["vnet_magic_n", "vnet_data_base"])
    if got["vnet_magic_n"] is not None and got["vnet_data_base"] is not None:
        return got["vnet_magic_n"], got["vnet_data_base"]
    p = kvm.ptrsize
    magic = 2 * p
    mem = (magic + 16 + p - 1) & -p
    return magic, mem + p


def read_vnet(kvm: Any, addr: int) -> int:
    """``vnet_data_base`` of the struct vnet at ``addr``; KvmError (libkvm's
    ``_kvm_vnet_selectpid`` wording) if it is unreadable or not a vnet."""
    magic_off, base_off = vnet_layout(kvm)
    try:
        magic = _uint(kvm, addr + magic_off, 4)
        base = _uint(kvm, addr + base_off, kvm.ptrsize)
    except KvmError:
        raise KvmError(f"_kvm_vnet_selectpid: vnet (0x{addr:x} unreadable)",
                       errno=errno.EFAULT) from None
    if magic != VNET_MAGIC_N:
        raise KvmError(f"_kvm_vnet_selectpid: invalid vnet magic# at 0x{addr:x}")
    return base


def _proc0_vnet(kvm: Any) -> Optional[int]:
    """libkvm's choice on a dump: proc0.p_ucred->cr_prison->pr_vnet (DWARF)."""
    from .kstate.offsets import dwarf_offsets
    proc0 = _base(kvm, "proc0")
    if proc0 is None:
        return None
    p = dwarf_offsets(kvm, "proc", ["p_ucred"])["p_ucred"]
    c = dwarf_offsets(kvm, "ucred", ["cr_prison"])["cr_prison"]
    j = dwarf_offsets(kvm, "prison", ["pr_vnet"])["pr_vnet"]
    if None in (p, c, j):
        return None
    try:
        cred = kvm.read_ptr(proc0 + p)
        prison = kvm.read_ptr(cred + c) if cred else 0
        return (kvm.read_ptr(prison + j) if prison else 0) or None
    except KvmError:
        return None


def vnet_init(kvm: Any) -> Optional[Vnet]:
    """``_kvm_vnet_selectpid`` for a dump: None when the kernel has no VNET."""
    start = _base(kvm, "__start_set_vnet", "___start_set_vnet")
    stop = _base(kvm, "__stop_set_vnet", "___stop_set_vnet")
    if start is None or stop is None or _base(kvm, "vnet_head") is None:
        return None
    addr = _proc0_vnet(kvm)
    if addr is None:
        v0 = _base(kvm, "vnet0")
        try:
            addr = kvm.read_ptr(v0) if v0 is not None else None
        except KvmError:
            addr = None
    if not addr:
        return None
    try:
        return Vnet(start, stop, addr, read_vnet(kvm, addr))
    except KvmError:
        return None


def vnet_list(kvm: Any) -> List[int]:
    """Addresses of every struct vnet on ``vnet_head`` (LIST, vnet_le first)."""
    head = _base(kvm, "vnet_head")
    if head is None:
        raise KvmError("the kernel has no vnet_head (not a VIMAGE kernel)", errno=errno.ENOENT)
    out: List[int] = []
    cur = kvm.read_ptr(head)
    while cur and len(out) < MAX_VNETS and cur not in out:
        out.append(cur)
        cur = kvm.read_ptr(cur)
    return out


def retry_names(name: str) -> List[Tuple[str, str]]:
    """(prefix, prefixed name) in libkvm's order, one leading '_' dropped."""
    bare = name[1:] if name.startswith("_") else name
    return [(VNET_SYMPREFIX, VNET_SYMPREFIX + bare), (DPCPU_SYMPREFIX, DPCPU_SYMPREFIX + bare)]
