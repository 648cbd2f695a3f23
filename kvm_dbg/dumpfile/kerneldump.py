"""``struct kerneldumpheader`` and the layout of a dump device.

Facts from freebsd-src ``sys/sys/kerneldump.h`` (the structure, version 4,
the parity rule), ``sys/kern/kern_shutdown.c`` (``dump_init_header``,
``dump_start``, ``dump_write_headers``: where the headers, the key and the
dump go) and ``sbin/savecore/savecore.c`` (``DoFile``: how the dump is found
again).  On the device::

    ... | first header | key (dumpkeysize) | dump (dumpextent) | last header |
                                                                 ^ mediasize - sectorsize

All integers are big-endian; the parity word makes the XOR of the 128
32-bit words zero (byte-order independent).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Optional

from ..errors import KvmError

HEADER_SIZE = 512
KERNELDUMPMAGIC = b"FreeBSD Kernel Dump"
TEXTDUMPMAGIC = b"FreeBSD Text Dump"
KERNELDUMPMAGIC_CLEARED = b"Cleared Kernel Dump"
MAGICS = (KERNELDUMPMAGIC, TEXTDUMPMAGIC, KERNELDUMPMAGIC_CLEARED)
KERNELDUMPVERSION = 4
KERNELDUMP_TEXT_VERSION = 4
COMPRESSION = {0: "none", 1: "gzip", 2: "zstd"}
ENCRYPTION = {0: "none", 1: "aes-256-cbc", 2: "chacha20"}
#: Sector sizes tried for an image file (a device reports its own).
SECTOR_SIZES = (512, 4096)

# magic[20] architecture[12] version architectureversion dumplength dumptime
# dumpkeysize blocksize hostname[64] versionstring[192] panicstring[175]
# compression(u8) dumpextent(u64, naturally aligned at 496) unused[4] parity
_FMT = ">20s12sIIQQII64s192s175sBQ4sI"
assert struct.calcsize(_FMT) == HEADER_SIZE


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def parity(block: bytes) -> int:
    """XOR of the header's 32-bit words (0 for a valid header)."""
    x = 0
    for (w,) in struct.iter_unpack(">I", block[:HEADER_SIZE]):
        x ^= w
    return x


@dataclass(frozen=True)
class KernelDumpHeader:
    """One decoded header, fields named as in ``sys/sys/kerneldump.h``."""

    magic: bytes
    architecture: str
    version: int
    architectureversion: int
    dumplength: int
    dumptime: int
    dumpkeysize: int
    blocksize: int
    hostname: str
    versionstring: str
    panicstring: str
    compression: int
    dumpextent: int
    parity_ok: bool
    raw: bytes

    @classmethod
    def parse(cls, block: bytes) -> KernelDumpHeader:
        (magic, arch, version, archver, length, time, keysize, bsize, host, vers, panic,
         comp, extent, _unused, _par) = struct.unpack(_FMT, block[:HEADER_SIZE])
        return cls(magic.split(b"\0", 1)[0], _cstr(arch), version, archver, length, time,
                   keysize, bsize, _cstr(host), _cstr(vers), _cstr(panic), comp, extent,
                   parity(block) == 0, bytes(block[:HEADER_SIZE]))

    @property
    def kind(self) -> Optional[str]:
        """"kernel", "text", "cleared", or None for no known magic."""
        return {KERNELDUMPMAGIC: "kernel", TEXTDUMPMAGIC: "text",
                KERNELDUMPMAGIC_CLEARED: "cleared"}.get(self.magic)

    @property
    def compression_name(self) -> str:
        return COMPRESSION.get(self.compression, f"unknown ({self.compression})")


@dataclass(frozen=True)
class DeviceDump:
    """Where the parts of a dump lie in a device image (byte offsets)."""

    header: KernelDumpHeader
    sectorsize: int
    first_header: int
    key_offset: int
    payload_offset: int

    @property
    def length(self) -> int:
        return self.header.dumplength

    @property
    def encrypted(self) -> bool:
        return self.header.dumpkeysize > 0

    @property
    def textdump(self) -> bool:
        return self.header.kind == "text"


def _pread(f: BinaryIO, off: int, size: int) -> bytes:
    f.seek(off)
    return f.read(size)


def find_last_header(f: BinaryIO, mediasize: int):
    """(sector size, header) of a trailing dump header with a known magic, or None."""
    for sector in SECTOR_SIZES:
        if mediasize < 2 * sector or mediasize % sector:
            continue
        block = _pread(f, mediasize - sector, HEADER_SIZE)
        if len(block) == HEADER_SIZE and block[:20].split(b"\0", 1)[0] in MAGICS:
            return sector, KernelDumpHeader.parse(block)
    return None


def locate(f: BinaryIO, mediasize: int, path: str) -> Optional[DeviceDump]:
    """The dump on a device image, checked as savecore(8) checks it; None when
    the image ends with no dump header.  KvmError (savecore's wording) for a
    cleared, damaged or inconsistent one."""
    found = find_last_header(f, mediasize)
    if found is None:
        return None
    sector, h = found
    lasthd = mediasize - sector
    if h.kind == "cleared":
        raise KvmError(f"the dump header at offset {lasthd} is a cleared one (\"Cleared Kernel "
                       "Dump\"): savecore has already saved or cleared this dump, and its "
                       "data may since have been overwritten", path=path)
    want = KERNELDUMP_TEXT_VERSION if h.kind == "text" else KERNELDUMPVERSION
    if h.version != want:
        raise KvmError(f"unknown version ({h.version}) in last dump header (offset {lasthd}); "
                       f"expected {want}", path=path)
    if not h.parity_ok:
        raise KvmError(f"parity error on last dump header (offset {lasthd})", path=path)
    if h.kind == "kernel" and h.compression not in COMPRESSION:
        raise KvmError(f"unknown compression type {h.compression} in last dump header",
                       path=path)
    firsthd = lasthd - h.dumpextent - sector - h.dumpkeysize
    if firsthd < 0 or h.dumplength > h.dumpextent:
        raise KvmError(f"dump header describes a dump larger than the image (dumpextent "
                       f"{h.dumpextent}, dumplength {h.dumplength}, dumpkeysize "
                       f"{h.dumpkeysize}, image {mediasize} bytes)", path=path)
    first = _pread(f, firsthd, HEADER_SIZE)
    if first != h.raw:
        raise KvmError(f"first and last dump headers disagree (offsets {firsthd} and "
                       f"{lasthd})", path=path)
    return DeviceDump(h, sector, firsthd, firsthd + sector, lasthd - h.dumpextent)
