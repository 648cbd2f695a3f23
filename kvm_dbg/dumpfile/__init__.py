"""What a core path really holds, and a plain, mappable file for it.

FreeBSD leaves dumps in several wrappings (see docs/crash-directory.md):
savecore's ``vmcore.N`` (plain), ``vmcore.N.zst`` / ``vmcore.N.gz``
(compressed by the kernel or by ``savecore -z``), ``vmcore_encrypted.N`` +
``key.N`` (encrypted, possibly compressed inside), ``textdump.tar.N[.gz]``
(no memory at all), or the raw dump device with its ``kerneldumpheader``
(itself possibly compressed or encrypted).  :func:`prepare` recognises each by
its bytes (magic numbers, the trailing header; only encryption, which has no
magic, by savecore's file name) and returns a :class:`Prepared`: the plain
file and byte range to map, decoding it once into a cached copy when needed
(``cache.py``, ``codecs.py``, ``crypto.py``).
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from ..errors import KvmError, syserr
from . import cache, codecs, crypto, progress
from .kerneldump import DeviceDump, KernelDumpHeader, locate

__all__ = ["Prepared", "prepare", "DeviceDump", "KernelDumpHeader", "dump_number",
           "TEXTDUMP_NO_MEMORY"]

OTHER_COMPRESSED = ((b"BZh", "bzip2", "bunzip2"), (b"\xfd7zXZ\x00", "xz", "unxz"))
TEXTDUMP_NO_MEMORY = ("a textdump has no memory: it holds only ddb output, the message "
                      "buffer, the panic and version strings (use kvm-dbg triage or info)")
_ENCRYPTED_NAME = re.compile(r"^vmcore_encrypted\.(\d+|last)(\.(gz|zst))?$")
_NUMBERED = re.compile(r"^(?:vmcore|vmcore_encrypted|livecore|textdump\.tar|info|key)"
                       r"\.(\d+)(?:\.(?:gz|zst))?$")


@dataclass
class Prepared:
    """The plain dump behind a core path: map ``path`` from ``offset`` for
    ``length`` bytes (None: to its end).  ``kind`` is "memory" or "textdump";
    ``steps`` says, for people, what was done to get there."""

    original: str
    path: str
    offset: int = 0
    length: Optional[int] = None
    kind: str = "memory"
    steps: List[str] = field(default_factory=list)
    header: Optional[KernelDumpHeader] = None
    cached: Optional[str] = None
    cache_hit: bool = False

    @property
    def textdump(self) -> bool:
        return self.kind == "textdump"

    @property
    def description(self) -> str:
        return "; ".join(self.steps) if self.steps else "plain dump"


def dump_number(path: str) -> Optional[int]:
    """N of savecore's ``vmcore.N[.zst]``, ``vmcore_encrypted.N``, ``textdump.tar.N.gz``..."""
    m = _NUMBERED.match(os.path.basename(path))
    return int(m.group(1)) if m else None


def _kind_of_head(head: bytes) -> Optional[str]:
    if head.startswith(b"minidump") or head.startswith(b"\x7fELF"):
        return "memory"
    if head.startswith(codecs.ZSTD_MAGIC):
        return "zstd"
    if head.startswith(codecs.GZIP_MAGIC):
        return "gzip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def _size_of(path: str, st: os.stat_result) -> int:
    if stat.S_ISBLK(st.st_mode):
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)
    return st.st_size


class _Job:
    """One decoding: the range of the source, the cipher, the codec."""

    def __init__(self, path: str, offset: int, length: int, codec: str,
                 decrypt: Optional[tuple] = None, reverse: bool = False) -> None:
        self.path, self.offset, self.length = path, offset, length
        self.codec, self.decrypt, self.reverse = codec, decrypt, reverse

    def recipe(self) -> str:
        parts = [f"{self.offset}+{self.length}", self.codec]
        if self.reverse:
            parts.append("reverse512")
        if self.decrypt is not None:
            dk, key = self.decrypt
            parts.append(f"{dk.algorithm}:{hashlib.sha256(key + dk.iv).hexdigest()[:16]}")
        return ":".join(parts)

    def run(self, write: Callable[[bytes], None], show: Optional[bool]) -> int:
        label = os.path.basename(self.path)
        verb = "decrypting" if self.decrypt else ("extracting" if self.reverse
                                                  else "decompressing")
        bar = progress.bar(self.length, f"{verb} {label}", show)
        try:
            with open(self.path, "rb") as f:
                if self.reverse:
                    return codecs.reversed_blocks(f, self.offset, self.length, write,
                                                  tick=bar.update)
                src = codecs.Source(f, self.offset, self.length, bar.update)
                if self.decrypt is not None:
                    dk, key = self.decrypt
                    src = crypto.Decrypting(src, dk, key, self.path)
                if self.codec == "zstd":
                    return codecs.zstd_stream(src, write, self.path)
                if self.codec == "gzip":
                    return codecs.gzip_stream(src, write, self.path)
                total = 0
                while True:
                    chunk = src.read(codecs.CHUNK)
                    if not chunk:
                        return total
                    write(chunk)
                    total += len(chunk)
        finally:
            bar.close()


def _decode(job: _Job, prep: Prepared, cache_dir: Optional[str], show: Optional[bool],
            what: str) -> None:
    """Run ``job`` into a cached copy (or reuse one) and point ``prep`` at it."""
    k = cache.key(job.path, job.recipe())
    hit = cache.lookup(job.path, k, cache_dir)
    if hit is None:
        path = cache.build(job.path, k, lambda w: job.run(w, show), cache_dir, what)
        prep.steps.append(f"{what} written to {path}")
    else:
        path = hit
        prep.cache_hit = True
        prep.steps.append(f"{what} reused from {path}")
    prep.path = prep.cached = path
    prep.offset, prep.length = 0, None


def _sniff_plain(job: _Job, prep: Prepared) -> Optional[str]:
    """Decrypt the first bytes: their format (also proves the key right)."""
    dk, key = job.decrypt
    with open(job.path, "rb") as f:
        src = crypto.Decrypting(codecs.Source(f, job.offset, min(job.length, 4096)), dk, key,
                                job.path)
        head = src.read(4096)
    kind = _kind_of_head(head)
    if kind not in ("memory", "zstd", "gzip"):
        raise KvmError("the decrypted data is not a kernel dump (no minidump, ELF, zstd or "
                       "gzip magic): the private key does not belong to this dump, or the "
                       "dump is damaged", path=prep.original)
    return None if kind == "memory" else kind


def _encrypted(path: str, prep: Prepared, blob: bytes, blob_path: str, offset: int,
               length: int, key: Optional[str], cache_dir, show) -> None:
    if key is None:
        raise KvmError(f"this dump is encrypted (its key is {blob_path}): give the RSA "
                       "private key it was encrypted for with --key (as decryptcore -p)",
                       path=path)
    hint = crypto.check_available(path)
    if hint:
        raise KvmError(f"this dump is encrypted: {hint}", path=path)
    dk = crypto.parse_key(blob, blob_path)
    sym = crypto.unwrap(dk, os.path.expanduser(key), blob_path)
    job = _Job(path, offset, length, "none", (dk, sym))
    prep.steps.append(f"encrypted ({dk.algorithm_name}), key {blob_path}")
    codec = _sniff_plain(job, prep)
    if codec:
        job.codec = codec
        prep.steps.append(f"{codec}-compressed inside")
    _decode(job, prep, cache_dir, show, "decrypted copy")


def _key_file(path: str, dumpkey: Optional[str]) -> str:
    if dumpkey:
        return os.path.expanduser(dumpkey)
    m = _ENCRYPTED_NAME.match(os.path.basename(path))
    n = m.group(1) if m else "0"
    return os.path.join(os.path.dirname(path) or ".", f"key.{n}")


def _read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(1 << 16)
    except OSError as e:
        raise KvmError(f"cannot read {what}: {e.strerror}", path=path) from None


def prepare(path: str, *, key: Optional[str] = None, dumpkey: Optional[str] = None,
            cache_dir: Optional[str] = None, show_progress: Optional[bool] = None
            ) -> Prepared:
    """Recognise the dump at ``path`` and make it mappable (see module doc).

    ``key``: the RSA private key (PEM) of an encrypted dump; ``dumpkey``: its
    key.N when not next to it; ``cache_dir``: where decoded copies go;
    ``show_progress``: None draws a bar only on a terminal.
    """
    prep = Prepared(path, path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise syserr(path, e.errno or errno.ENOENT) from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        return prep                    # directories, devices: the opener's own errors
    size = _size_of(path, st)
    if size <= 0:
        return prep
    try:
        with open(path, "rb") as f:
            head = f.read(512)
            dev = None if _kind_of_head(head) == "memory" else locate(f, size, path)
    except KvmError:
        raise
    except OSError as e:
        raise syserr(path, e.errno or errno.EIO) from None
    if dev is not None:
        return _device(path, prep, dev, key, cache_dir, show_progress)
    kind = _kind_of_head(head)
    if kind == "memory":
        return prep
    if kind in ("zstd", "gzip"):
        prep.steps.append(f"{kind}-compressed")
        _decode(_Job(path, 0, size, kind), prep, cache_dir, show_progress,
                "decompressed copy")
        with open(prep.path, "rb") as f:
            inner = f.read(512)
        if _kind_of_head(inner) == "tar":
            prep.kind = "textdump"
        return prep
    if kind == "tar":
        prep.kind = "textdump"
        return prep
    for magic, name, tool in OTHER_COMPRESSED:
        if head.startswith(magic):
            raise KvmError(f"core is {name}-compressed: decompress it first ({tool})", path=path)
    if _ENCRYPTED_NAME.match(os.path.basename(path)) or key is not None:
        blob_path = _key_file(path, dumpkey)
        blob = _read_file(blob_path, "the dump's key")
        _encrypted(path, prep, blob, blob_path, 0, size, key, cache_dir, show_progress)
        return prep
    return prep


def _device(path: str, prep: Prepared, dev: DeviceDump, key, cache_dir, show) -> Prepared:
    h = dev.header
    prep.header = h
    prep.steps.append(f"dump device image ({h.kind} dump of {h.dumplength} bytes at offset "
                      f"{dev.payload_offset}, compression {h.compression_name})")
    if dev.textdump:
        prep.kind = "textdump"
        _decode(_Job(path, dev.payload_offset, h.dumplength, "none", reverse=True), prep,
                cache_dir, show, "textdump tar file")
        return prep
    codec = {1: "gzip", 2: "zstd"}.get(h.compression, "none")
    if dev.encrypted:
        with open(path, "rb") as f:
            f.seek(dev.key_offset)
            blob = f.read(h.dumpkeysize)
        _encrypted(path, prep, blob, f"{path} (key at offset {dev.key_offset})",
                   dev.payload_offset, h.dumplength, key, cache_dir, show)
        return prep
    if codec != "none":
        _decode(_Job(path, dev.payload_offset, h.dumplength, codec), prep, cache_dir, show,
                "decompressed copy")
        return prep
    if dev.payload_offset % mmap.ALLOCATIONGRANULARITY == 0:
        prep.offset, prep.length = dev.payload_offset, h.dumplength
        prep.steps.append("mapped in place")
        return prep
    _decode(_Job(path, dev.payload_offset, h.dumplength, "none"), prep, cache_dir, show,
            "copy of the dump")
    return prep
