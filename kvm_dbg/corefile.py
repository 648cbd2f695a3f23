"""The crash dump file, memory-mapped and bounds-checked.

Every format reader goes through this object, so untrusted offsets and
lengths from dump headers are checked against the real file size in one
place and the file is never read whole.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import struct
from typing import Optional

from .errors import KvmError, syserr

_U = {1: "B", 2: "H", 4: "I", 8: "Q"}


class CoreFile:
    """A read-only (or writable) memory map of a dump file, or of the byte
    range ``[offset, offset + length)`` of one (a dump inside a device image;
    ``offset`` a multiple of ``mmap.ALLOCATIONGRANULARITY``)."""

    def __init__(self, path: str, writable: bool = False, offset: int = 0,
                 length: Optional[int] = None) -> None:
        self.path = path
        self.writable = writable
        flags = os.O_RDWR if writable else os.O_RDONLY
        try:
            fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise syserr(path, e.errno or errno.EIO, path=path) from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise syserr(path, errno.EISDIR, path=path)
            if stat.S_ISBLK(st.st_mode):
                total = os.lseek(fd, 0, os.SEEK_END)
            elif stat.S_ISREG(st.st_mode):
                total = st.st_size
            else:
                raise KvmError(f"{path}: not a regular file: {os.strerror(errno.EINVAL)}",
                               path=path)
            if length is None:
                length = total - offset
            if total <= 0 or length <= 0:
                raise KvmError(f"empty file: {os.strerror(errno.EINVAL)}", path=path)
            if offset < 0 or offset + length > total:
                raise KvmError(f"dump range {offset}+{length} lies beyond the end of the file "
                               f"({total} bytes)", path=path)
            self.size = length
            access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
            try:
                self.mm = mmap.mmap(fd, length, access=access, offset=offset)
            except (OSError, ValueError) as e:
                raise KvmError(f"cannot map corefile: {e}", path=path) from None
        finally:
            os.close(fd)

    def close(self) -> None:
        mm, self.mm = self.mm, None
        if mm is not None:
            mm.close()

    # -- bounded access -------------------------------------------------
    def has(self, off: int, size: int) -> bool:
        """True when [off, off+size) lies inside the file."""
        return 0 <= off and size >= 0 and off + size <= self.size

    def read(self, off: int, size: int, what: str = "data") -> bytes:
        """Exactly ``size`` bytes at ``off``, or a KvmError naming ``what``."""
        if not self.has(off, size):
            raise KvmError(f"cannot read {size} bytes from offset {off} for {what}", path=self.path)
        return self.mm[off:off + size]

    def uint(self, off: int, size: int, order: str) -> int:
        """An unsigned integer of ``size`` bytes in byte order ``order``."""
        if not self.has(off, size):
            raise KvmError(f"offset {off} beyond end of file", path=self.path)
        return struct.unpack_from(("<" if order == "little" else ">") + _U[size], self.mm, off)[0]

    def write(self, off: int, data: bytes) -> None:
        if not self.writable:
            raise KvmError("kvm_write not implemented for dead kernels", path=self.path)
        if not self.has(off, len(data)):
            raise KvmError(f"cannot write {len(data)} bytes at offset {off}", path=self.path)
        self.mm[off:off + len(data)] = data

    def head(self, size: int) -> bytes:
        """Up to ``size`` bytes from the start (shorter if the file is)."""
        return self.mm[:min(size, self.size)]


def peek(path: str, size: int) -> Optional[bytes]:
    """The first ``size`` bytes of a file, or None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return None
