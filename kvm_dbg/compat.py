"""libkvm's C-style API over :class:`Kvm`, with libkvm's return values.

All error reporting of the compatibility layer happens in ``_report``:
Sun-style descriptors (``kvm_open`` with an ``errstr``) print hard errors to
stderr with the program prefix; every soft error, and every error of a
BSD-style descriptor, lands in the descriptor's error buffer (api.md §3).
A successful call never clears that buffer.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

from .elfkernel import N_DATA, N_EXT, N_UNDF
from .errors import KvmError
from .kvm import Kvm, Resolver

O_RDONLY, O_WRONLY, O_RDWR = os.O_RDONLY, os.O_WRONLY, os.O_RDWR
POSIX2_LINE_MAX = 2048
_ERRMAX = POSIX2_LINE_MAX - 1


@dataclass
class nlist:  # noqa: N801 - libkvm's name
    """One ``struct kvm_nlist`` / ``struct nlist`` entry, filled in place."""

    n_name: Optional[str]
    n_type: int = 0
    n_value: int = 0
    n_other: int = 0
    n_desc: int = 0


# -- error plumbing ---------------------------------------------------------

def _is_soft(message: str) -> bool:
    return message.lower().startswith("invalid address")


def _report(kd: Kvm, err: KvmError) -> None:
    """Record ``err`` the way libkvm's _kvm_err/_kvm_syserr would."""
    parts = []
    if err.hard:
        parts.append((err.hard, False))
    parts.append((err.message, _is_soft(err.message)))
    for text, soft in parts:
        if kd.program is not None and not soft:
            sys.stderr.write(f"{kd.program}: {text}\n")
            sys.stderr.flush()
        else:
            kd.errbuf = text[:_ERRMAX]


def _fill_errbuf(errbuf: Optional[bytearray], message: str) -> None:
    """strlcpy into a caller-owned buffer (NUL-terminated, truncated)."""
    if errbuf is None or len(errbuf) == 0:
        return
    data = message.encode("utf-8", "replace")[:min(len(errbuf), POSIX2_LINE_MAX) - 1]
    errbuf[:len(data)] = data
    errbuf[len(data)] = 0


# -- opening ------------------------------------------------------------------

def _open_common(execfile, corefile, flags, resolver, program, errbuf) -> Optional[Kvm]:
    try:
        kd = Kvm._open(execfile, corefile, flags, resolver, require_resolver=True)
    except KvmError as e:
        if program is not None:
            sys.stderr.write(f"{program}: {e.message}\n")
            sys.stderr.flush()
        _fill_errbuf(errbuf, e.message)
        return None
    kd.program = program
    return kd


def kvm_open(execfile: Optional[str], corefile: Optional[str], swapfile: Any, flags: int,
             errstr: Optional[str]) -> Optional[Kvm]:
    """Sun-style open: errors go to stderr prefixed with ``errstr`` (if not None)."""
    return _open_common(execfile, corefile, flags, None, errstr, None)


def kvm_openfiles(execfile: Optional[str], corefile: Optional[str], swapfile: Any, flags: int,
                  errbuf: Optional[bytearray]) -> Optional[Kvm]:
    """BSD-style open: the error message is written into ``errbuf``."""
    return _open_common(execfile, corefile, flags, None, None, errbuf)


def kvm_open2(execfile: Optional[str], corefile: Optional[str], flags: int,
              errbuf: Optional[bytearray], resolver: Optional[Resolver]) -> Optional[Kvm]:
    """BSD-style open with a symbol resolver ``name -> address or None``."""
    return _open_common(execfile, corefile, flags, resolver, None, errbuf)


def kvm_close(kd: Optional[Kvm]) -> int:
    """Close a descriptor: 0, or -1 with errno EINVAL for None."""
    if kd is None:
        ctypes.set_errno(errno.EINVAL)
        return -1
    kd.close()
    return 0


def kvm_geterr(kd: Optional[Kvm]) -> str:
    """The last error of a descriptor ('' for None)."""
    return "" if kd is None else kd.errbuf


# -- symbols --------------------------------------------------------------------

def _entries(nl: List[nlist]) -> List[nlist]:
    out = []
    for ent in nl:
        if not ent.n_name:
            break
        out.append(ent)
    return out


def kvm_nlist2(kd: Kvm, nl: List[nlist]) -> int:
    """Fill ``n_value``/``n_type``; the number of names not found (-1 on error).

    libkvm's ``_kvm_nlist``: the base lookup (resolver, else the kernel's
    nlist; then, a kvm_dbg addition, a loaded module's file), then the names
    still missing retried as ``vnet_entry_`` and ``pcpu_entry_`` variables
    relocated for the selected vnet / CPU (kvm_dbg.virtsyms; libkvm does this
    for native cores only, kvm_dbg for all)."""
    ents = _entries(nl)
    missing = 0
    for ent in ents:
        ent.n_type, ent.n_value = N_UNDF, 0
        if kd.resolver is not None:
            value = kd._resolve(ent.n_name)
            hit = None if value is None else (value, N_DATA | N_EXT)
        else:
            hit = kd.kernel.nlist(ent.n_name) if kd.kernel is not None else None
        if hit is None:
            value = kd._resolve_module(ent.n_name)
            hit = None if value is None else (value, N_DATA | N_EXT)
        if hit is None:
            missing += 1
        else:
            ent.n_value, ent.n_type = hit
    if missing > 0:
        for ent in ents:
            if ent.n_type == N_UNDF:
                value = kd._resolve_virtual(ent.n_name)
                if value is not None:
                    ent.n_value, ent.n_type = value, N_DATA | N_EXT
                    missing -= 1
    return missing


def kvm_dpcpu_setcpu(kd: Kvm, cpu: int) -> int:
    """Select the CPU whose DPCPU copies ``kvm_nlist2`` resolves to: 0, or -1
    with libkvm's message in the error buffer."""
    try:
        kd.set_cpu(cpu)
    except KvmError as e:
        if kd._virt.get("dpcpu") is None:
            _report(kd, KvmError("kvm_dpcpu_setcpu: init failed"))
        else:
            _report(kd, e)
        return -1
    return 0


def kvm_nlist(kd: Kvm, nl: List[nlist]) -> int:
    """Legacy nlist: refused for non-native kernels, as in libkvm."""
    if not kvm_native(kd):
        _report(kd, KvmError("kvm_nlist of non-native vmcore"))
        return -1
    ents = _entries(nl)
    if not ents:
        return 0
    rv = kvm_nlist2(kd, ents)
    for ent in ents:
        ent.n_other = ent.n_desc = 0
    return rv


# -- memory -----------------------------------------------------------------------

def kvm_read2(kd: Kvm, addr: int, buf) -> int:
    """Fill ``buf`` from kernel memory: bytes read, or -1 on a translation failure
    (even after partial progress, as libkvm)."""
    view = memoryview(buf).cast("B")
    want = len(view)
    if kd.live_null:
        _report(kd, KvmError("short read"))
        return 0
    done = 0
    while done < want:
        va = addr + done
        o = va & 0xFFF
        try:
            off, n = kd._page(va)
        except KvmError as e:
            _report(kd, e)
            return -1
        take = min(want - done, max(0, n - o))
        if take <= 0:
            break                               # EOF in a truncated core
        view[done:done + take] = kd.core.mm[off + o:off + o + take]
        done += take
        if o + take < 4096 and done < want:
            break
    return done


kvm_read = kvm_read2


def kvm_write(kd: Kvm, addr: int, data) -> int:
    """Write into a dump opened O_RDWR/O_WRONLY: bytes written or -1."""
    try:
        kd.write(addr, bytes(data))
    except KvmError as e:
        _report(kd, e)
        return -1
    return len(data)


def kvm_native(kd: Kvm) -> int:
    """1 when the kernel's ABI matches this host (or the descriptor is live)."""
    return 1 if kd.live_null or kd.native else 0


def kvm_kerndisp(kd: Kvm) -> int:
    """Run-time minus link-time kernel base (non-zero only for relocated kernels)."""
    return kd.kerndisp


def kvm_walk_pages(kd: Kvm, callback: Callable[[Any, Any], int], closure: Any = None) -> int:
    """Call ``callback(page, closure)`` per page: 1 when complete, 0 if stopped or
    unsupported by the format."""
    if kd.backend is None:
        return 0
    it = kd.backend.walk_pages()
    if it is None:
        return 0
    for page in it:
        if not callback(page, closure):
            return 0
    return 1
