"""Panic message, version strings and the kernel/dump mismatch check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .ksyms import file_bytes, kernel_path
from .memory import decode_text, lookup, read_cstring, read_int, read_ptr, warn
from .walk import osreldate

VERSION_MAX = 1024
HOSTNAME_MAX = 256


@dataclass
class PanicInfo:
    """What the dump says about itself; any field may be None if absent."""

    panicstr: Optional[str]
    version: Optional[str]           # the dump's ``version`` string
    file_version: Optional[str]      # the kernel FILE's ``version`` string
    osrelease: Optional[str]
    osreldate: Optional[int]
    hostname: Optional[str]
    dumptid: Optional[int]

    @property
    def version_mismatch(self) -> Optional[bool]:
        """True if kernel file and dump disagree; None if either is unknown."""
        if not self.version or not self.file_version:
            return None
        return self.version.strip() != self.file_version.strip()


def _string(kvm: Any, name: str, maxlen: int) -> Optional[str]:
    raw = read_cstring(kvm, lookup(kvm, name), maxlen)
    return decode_text(raw) if raw else None


def panic_info(kvm: Any) -> PanicInfo:
    """Collect panic/version facts; bad data never raises."""
    panicstr = None
    ptr = read_ptr(kvm, lookup(kvm, "panicstr"))
    if ptr:
        raw = read_cstring(kvm, ptr, VERSION_MAX)
        panicstr = decode_text(raw) if raw else None
    file_version = None
    path = kernel_path(kvm)
    if path:
        raw = file_bytes(path, "version", VERSION_MAX)
        if raw:
            file_version = decode_text(raw.split(b"\0", 1)[0]) or None
    info = PanicInfo(
        panicstr=panicstr,
        version=_string(kvm, "version", VERSION_MAX),
        file_version=file_version,
        osrelease=_string(kvm, "osrelease", 64),
        osreldate=osreldate(kvm),
        hostname=_string(kvm, "hostname", HOSTNAME_MAX),
        dumptid=read_int(kvm, lookup(kvm, "dumptid"), 4, signed=True),
    )
    if info.version_mismatch:
        msg = "kernel file version does not match the dump's (wrong kernel for this core?)"
        if msg not in getattr(kvm, "warnings", ()):
            warn(kvm, msg)
    return info
