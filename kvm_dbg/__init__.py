"""kvm_dbg: FreeBSD kernel crash dumps on any host, from Python, gdb or lldb.

Two APIs over one descriptor: libkvm's C-style functions (``kvm_open2``,
``kvm_read``, ...) with libkvm's return values and error strings, and a
Pythonic one (``kvm_dbg.open(kernel, core)`` returning a :class:`Kvm`).
"""

from .arch.base import LIBKVM_WALK_PAGES_VERSION, VM_PROT_EXECUTE, VM_PROT_READ, VM_PROT_WRITE
from .arch.base import KvmPage as kvm_page
from .compat import (
    O_RDONLY,
    O_RDWR,
    O_WRONLY,
    POSIX2_LINE_MAX,
    kvm_close,
    kvm_dpcpu_setcpu,
    kvm_geterr,
    kvm_kerndisp,
    kvm_native,
    kvm_nlist,
    kvm_nlist2,
    kvm_open,
    kvm_open2,
    kvm_openfiles,
    kvm_read,
    kvm_read2,
    kvm_walk_pages,
    kvm_write,
    nlist,
)
from .errors import KvmError
from .kvm import Kvm, open

__version__ = "0.1.0"

__all__ = [
    "Kvm", "KvmError", "open", "kvm_open", "kvm_open2", "kvm_openfiles", "kvm_close",
    "kvm_geterr", "kvm_nlist", "kvm_nlist2", "kvm_read", "kvm_read2", "kvm_write",
    "kvm_native", "kvm_kerndisp", "kvm_walk_pages", "kvm_dpcpu_setcpu", "nlist", "kvm_page",
    "O_RDONLY", "O_WRONLY", "O_RDWR", "POSIX2_LINE_MAX", "VM_PROT_READ", "VM_PROT_WRITE",
    "VM_PROT_EXECUTE", "LIBKVM_WALK_PAGES_VERSION", "__version__",
]
