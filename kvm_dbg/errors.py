"""The one exception type of kvm_dbg, carrying libkvm's messages.

libkvm reports two kinds of error: "hard" ones (printed with the program
prefix in Sun-compatible mode) and "soft" ones (always stored in the error
buffer).  A failed address translation typically produces a specific hard
message followed by the soft ``invalid address (0x...)``.  ``KvmError``
keeps both so the compatibility layer can reproduce libkvm exactly while the
Pythonic API shows one readable line.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import Optional


class KvmError(OSError):
    """Any failure of kvm_dbg: opening, translating, reading, symbols.

    ``message`` is the libkvm text (what ``kvm_geterr`` would return);
    ``hard`` is an optional more specific message that libkvm would have
    reported first (e.g. ``_amd64_minidump_vatop: pde not valid``).
    """

    def __init__(self, message: str, *, hard: Optional[str] = None,
                 errno: int = _errno.EINVAL, path: Optional[str] = None,
                 address: Optional[int] = None) -> None:
        super().__init__(errno, message)
        self.message = message
        self.hard = hard
        self.path = path
        self.address = address

    def __str__(self) -> str:
        text = self.message
        if self.hard and self.hard != self.message:
            text = f"{self.message}: {self.hard}"
        if self.path and self.path not in text:
            text = f"{self.path}: {text}"
        return text


def syserr(message: str, err: int, path: Optional[str] = None) -> KvmError:
    """libkvm's ``_kvm_syserr``: the message followed by ``strerror(errno)``."""
    return KvmError(f"{message}: {os.strerror(err)}", errno=err, path=path)


def invalid_address(va: int, hard: Optional[str] = None) -> KvmError:
    """The soft message every failed translation ends with."""
    return KvmError(f"invalid address (0x{va:x})", hard=hard, errno=_errno.EFAULT, address=va)
