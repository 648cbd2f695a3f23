"""Streaming decoders from a byte source to a sink: zstd, gzip, block reversal.

Each reads its input in bounded chunks and hands bounded output chunks to
``write``, so memory stays flat whatever the dump size or the compression
ratio.  A truncated or corrupt stream raises :class:`KvmError` naming the
compressed offset; the caller discards the partial output.

zstd: python-zstandard (``zstandard``; Debian ``python3-zstandard``).  Its
stream reader stops silently at a truncated input, so the frame structure
(RFC 8878 section 3.1) is followed here as the bytes pass: the stream is
complete only if every frame reached its last block and checksum.
gzip: the standard library's zlib (RFC 1952; several members allowed, as
gunzip does; the kernel writes one, sys/kern/subr_compressor.c).
"""

from __future__ import annotations

import zlib
from typing import BinaryIO, Callable, Optional

from ..errors import KvmError

CHUNK = 1 << 20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
Sink = Callable[[bytes], None]
Tick = Callable[[int], None]

INSTALL_ZSTD = ("install python-zstandard (pip install 'kvm-dbg[zstd]', or Debian's "
                "python3-zstandard), or decompress it first (unzstd)")


class Source:
    """``read(n)`` over ``[offset, offset + length)`` of an open file; ``pos``
    counts the bytes handed out (offsets in messages are relative to the file
    when ``offset`` is 0, as for a saved vmcore.N.zst)."""

    def __init__(self, f: BinaryIO, offset: int, length: int, tick: Optional[Tick] = None):
        self.f = f
        self.base = offset
        self.length = length
        self.pos = 0
        self.tick = tick

    def read(self, n: int = -1) -> bytes:
        left = self.length - self.pos
        if n is None or n < 0 or n > left:
            n = left
        if n <= 0:
            return b""
        self.f.seek(self.base + self.pos)
        data = self.f.read(n)
        self.pos += len(data)
        if self.tick is not None and data:
            self.tick(len(data))
        return data

    def readinto(self, b) -> int:  # python-zstandard prefers readinto when present
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


class ZstdFrames:
    """Follows zstd frame and block headers in the bytes read through it.

    ``complete`` is True only between frames (after a frame's last block and
    checksum, or a whole skippable frame); ``where`` says what is unfinished.
    """

    def __init__(self, inner) -> None:
        self.inner = inner
        self.pos = 0               # stream offset of the next byte to parse
        self.need = 0              # bytes of payload still to skip
        self.state = "magic"
        self.buf = b""             # a header being assembled
        self.frames = 0
        self.checksum = False
        self.frame_start = 0

    @property
    def complete(self) -> bool:
        return self.frames > 0 and self.state == "magic" and not self.buf and not self.need

    def where(self) -> str:
        if self.need:
            return f"{self.need} bytes short of the end of a block"
        return {"magic": "inside a frame magic number", "fhd": "inside a frame header",
                "block": "before the frame's last block", "checksum": "inside a checksum",
                "skip": "inside a skippable frame"}.get(self.state, self.state)

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self._feed(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def _take(self, data: bytes, i: int, want: int):
        """Accumulate ``want`` header bytes; (header or None, new index)."""
        got = want - len(self.buf)
        self.buf += data[i:i + got]
        i += got
        if len(self.buf) < want:
            return None, len(data)
        out, self.buf = self.buf, b""
        return out, i

    def _feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self.need:
                step = min(self.need, n - i)
                self.need -= step
                i += step
                continue
            start = self.pos + i - len(self.buf)
            if self.state == "magic":
                hdr, i = self._take(data, i, 4)
                if hdr is None:
                    break
                magic = int.from_bytes(hdr, "little")
                if magic == 0xFD2FB528:
                    self.state, self.frame_start = "fhd", start
                elif magic & 0xFFFFFFF0 == 0x184D2A50:
                    self.state = "skip"
                else:
                    raise KvmError(f"not a zstd frame at offset {start} "
                                   f"(magic 0x{magic:08x})")
            elif self.state == "skip":
                hdr, i = self._take(data, i, 4)
                if hdr is None:
                    break
                self.need = int.from_bytes(hdr, "little")
                self.state = "magic"
                self.frames += 1
            elif self.state == "fhd":
                fhd = data[i]
                if fhd & 0x08:
                    raise KvmError(f"corrupt zstd frame header at offset {start}")
                fcs = (0, 2, 4, 8)[fhd >> 6]
                single = fhd & 0x20
                if fhd >> 6 == 0 and single:
                    fcs = 1
                self.checksum = bool(fhd & 0x04)
                self.need = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs
                i += 1
                self.state = "block"
            elif self.state == "block":
                hdr, i = self._take(data, i, 3)
                if hdr is None:
                    break
                word = int.from_bytes(hdr, "little")
                last, btype, size = word & 1, (word >> 1) & 3, word >> 3
                if btype == 3:
                    raise KvmError(f"corrupt zstd block header at offset {start}")
                self.need = 1 if btype == 1 else size
                if last:
                    self.state = "checksum" if self.checksum else "end"
            elif self.state == "checksum":
                self.need = 4
                self.state = "end"
            if self.state == "end" and not self.need:
                self.state = "magic"
                self.frames += 1
        self.pos += n


def _finish_states(t: ZstdFrames) -> None:
    """Advance the tracker past states that consume no more bytes."""
    if t.state == "checksum" and not t.need:
        t.need, t.state = 4, "end"
    if t.state == "end" and not t.need:
        t.state = "magic"
        t.frames += 1


def zstd_stream(src: Source, write: Sink, path: str) -> int:
    """Decompress zstd frames from ``src`` into ``write``; bytes written."""
    try:
        import zstandard
    except ImportError:
        raise KvmError(f"the dump is zstd-compressed: {INSTALL_ZSTD}", path=path) from None
    frames = ZstdFrames(src)
    reader = zstandard.ZstdDecompressor().stream_reader(
        frames, read_size=CHUNK // 4, read_across_frames=True)
    total = 0
    try:
        while True:
            chunk = reader.read(CHUNK)
            if not chunk:
                break
            write(chunk)
            total += len(chunk)
    except zstandard.ZstdError as e:
        raise KvmError(f"corrupt zstd data before compressed offset {src.base + src.pos} "
                       f"(frame at offset {src.base + frames.frame_start}): {e}",
                       path=path) from None
    _finish_states(frames)
    if not frames.complete:
        raise KvmError(f"truncated zstd stream: it ends at compressed offset "
                       f"{src.base + src.pos}, {frames.where()} (frame at offset "
                       f"{src.base + frames.frame_start}); the file was cut short", path=path)
    return total


def gzip_stream(src: Source, write: Sink, path: str) -> int:
    """Inflate gzip members from ``src`` into ``write``; bytes written."""
    total = 0
    d = zlib.decompressobj(wbits=31)
    pending = b""
    members = 0
    while True:
        if not pending:
            pending = src.read(CHUNK // 4)
            if not pending:
                break
        start = src.base + src.pos - len(pending)
        if d.eof:
            if len(pending) < 2:
                more = src.read(CHUNK // 4)
                if more:
                    pending += more
                    continue
            if pending.startswith(GZIP_MAGIC):
                d = zlib.decompressobj(wbits=31)
            elif not pending.strip(b"\0"):
                pending = b""          # zero padding after the last member
                continue
            else:
                raise KvmError(f"trailing data after the gzip stream at offset {start}",
                               path=path)
        try:
            out = d.decompress(pending, CHUNK)
        except zlib.error as e:
            raise KvmError(f"corrupt gzip data in compressed offsets {start}.."
                           f"{start + len(pending)}: {e}", path=path) from None
        pending = d.unconsumed_tail if not d.eof else d.unused_data
        if d.eof:
            members += 1
        if out:
            write(out)
            total += len(out)
    if not d.eof:
        raise KvmError(f"truncated gzip stream: it ends at compressed offset "
                       f"{src.base + src.pos} before the end of member {members + 1}; the "
                       "file was cut short", path=path)
    return total


def reversed_blocks(f: BinaryIO, offset: int, length: int, write: Sink, block: int = 512,
                    tick: Optional[Tick] = None) -> int:
    """A textdump as the kernel wrote it (last block first, sys/ddb/db_textdump.c)
    in reading order, as savecore's ``DoTextdumpFile`` reverses it."""
    end = offset + length
    for k in range(length // block):
        f.seek(end - (k + 1) * block)
        data = f.read(block)
        if len(data) != block:
            raise KvmError(f"textdump block at offset {end - (k + 1) * block} is cut short")
        write(data)
        if tick is not None:
            tick(block)
    return length
