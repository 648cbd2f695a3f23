"""What FreeBSD leaves behind a panic, generated for tests: dump-device images,
compressed and encrypted dumps, textdump tarballs, savecore's info.N and a
crash directory.  Written from the FreeBSD sources, independently of kvm_dbg:

* ``sys/sys/kerneldump.h``: ``struct kerneldumpheader`` (big-endian, 512 bytes,
  compression at 495, dumpextent at 496, parity XOR = 0), ``struct
  kerneldumpkey`` (packed: u8 algorithm, 32-byte IV, u32 size, key).
* ``sys/kern/kern_shutdown.c``: ``dump_start``/``dump_write_headers``: leading
  header at ``end - 2*blk - extent - keysize``, the key after it, the dump
  at ``end - blk - extent``, the trailing header in the last block; the
  key blob rounded up to the block size.
* ``sys/kern/subr_compressor.c``: gzip = 10-byte header, raw deflate, CRC32
  and size; zstd = one frame with a checksum and no content size.
* ``sys/ddb/db_textdump.c``: ustar files written last block first.
* ``sbin/savecore/savecore.c`` ``printheader``: the info.N text.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import time
from typing import Dict, Optional, Tuple

HDR = 512
_FMT = ">20s12sIIQQII64s192s175sBQ4sI"


def _parity(block: bytes) -> int:
    x = 0
    for (w,) in struct.iter_unpack(">I", block):
        x ^= w
    return x


def header(dumplength: int, *, magic: bytes = b"FreeBSD Kernel Dump", arch: str = "amd64",
           version: int = 4, archver: int = 2, dumptime: int = 1700000000,
           keysize: int = 0, blocksize: int = 512, hostname: str = "crashbox",
           versionstring: str = "", panic: str = "", compression: int = 0,
           dumpextent: Optional[int] = None, bad_parity: bool = False) -> bytes:
    raw = struct.pack(_FMT, magic, arch.encode(), version, archver, dumplength, dumptime,
                      keysize, blocksize, hostname.encode(), versionstring.encode()[:192],
                      panic.encode()[:175], compression,
                      dumplength if dumpextent is None else dumpextent, b"\0" * 4, 0)
    par = _parity(raw) ^ (1 if bad_parity else 0)
    return raw[:-4] + struct.pack(">I", par)


def kernel_gzip(data: bytes) -> bytes:
    """The kernel's gzip stream: fixed 10-byte header (OS_CODE 3), deflate, trailer."""
    import zlib
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush()
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + body
            + struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF))


def kernel_zstd(data: bytes) -> bytes:
    """One zstd frame with a content checksum and no content size, as zstdio."""
    import zstandard
    c = zstandard.ZstdCompressor(level=6, write_checksum=True,
                                 write_content_size=False).compressobj()
    return c.compress(data) + c.flush()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return kernel_gzip(data)
    if how == "gzip-savecore":       # savecore -z: zlib's gzdopen
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return kernel_zstd(data)
    raise ValueError(how)


# -- encryption (kernel side: kerneldumpcrypto_create / dump_encrypt) ---------

def rsa_key(bits: int = 2048):
    from cryptography.hazmat.primitives.asymmetric import rsa
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def write_pem(priv, path: str) -> str:
    from cryptography.hazmat.primitives import serialization
    with open(path, "wb") as f:
        f.write(priv.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.NoEncryption()))
    return path


def encrypt(data: bytes, priv, algorithm: int, blocksize: int = 512,
            pkcs1v15: bool = False, seed: bytes = b"") -> Tuple[bytes, bytes]:
    """(ciphertext, key blob padded to the block size) for AES-256-CBC (1) or
    ChaCha20 (2), the 64-byte dump key wrapped with RSA-OAEP (or PKCS #1 v1.5)."""
    import hashlib

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    key = hashlib.sha512(b"key" + seed).digest()          # 64 bytes
    iv = hashlib.sha256(b"iv" + seed).digest()            # 32 bytes
    if algorithm == 1:
        assert len(data) % 16 == 0
        enc = Cipher(algorithms.AES(key[:32]), modes.CBC(iv[:16])).encryptor()
    else:
        enc = Cipher(algorithms.ChaCha20(key[:32], bytes(8) + iv[:8]), mode=None).encryptor()
    ct = enc.update(data) + enc.finalize()
    pad = padding.PKCS1v15() if pkcs1v15 else padding.OAEP(
        mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    wrapped = priv.public_key().encrypt(key, pad)
    blob = struct.pack(">B32sI", algorithm, iv, len(wrapped)) + wrapped
    blob += bytes(-len(blob) % blocksize)
    return ct, blob


# -- dump device ----------------------------------------------------------------

def device_image(path: str, payload: bytes, *, sector: int = 512, key_blob: bytes = b"",
                 front: int = 64 * 1024, extent: Optional[int] = None, first_hdr=None,
                 **hdr) -> str:
    """Write a dump partition image holding ``payload`` (already compressed or
    encrypted as the header says); ``hdr`` goes to :func:`header`."""
    padded = payload + bytes(-len(payload) % sector)
    extent = len(padded) if extent is None else extent
    h = header(len(payload), dumpextent=extent, keysize=len(key_blob), blocksize=sector, **hdr)
    hblock = h + bytes(sector - HDR)
    fblock = (first_hdr if first_hdr is not None else h) + bytes(sector - HDR)
    with open(path, "wb") as f:
        f.write(bytes(front))
        f.write(fblock)
        f.write(key_blob)
        f.write(padded + bytes(extent - len(padded)))
        f.write(hblock)
    return path


# -- textdumps ----------------------------------------------------------------

def _ustar(name: str, size: int, mtime: int) -> bytes:
    h = bytearray(512)

    def put(off: int, width: int, text: str) -> None:
        b = text.encode()[:width - 1]
        h[off:off + len(b)] = b

    put(0, 100, name)
    put(100, 8, "0600")
    put(108, 8, "0")
    put(116, 8, "0")
    put(124, 12, f"{size:o}")
    put(136, 12, f"{mtime:o}")
    h[156] = 0
    put(257, 6, "ustar")
    put(265, 32, "root")
    put(297, 32, "wheel")
    h[148:156] = b" " * 8
    s = f"{sum(h):6o}".encode() + b"\0"
    h[148:148 + len(s)] = s
    return bytes(h)


def textdump_tar(files: Dict[str, bytes], mtime: int = 1700000000) -> bytes:
    """The tar stream db_textdump.c writes (in reading order; no end blocks)."""
    out = io.BytesIO()
    for name, data in files.items():
        out.write(_ustar(name, len(data), mtime))
        out.write(data + bytes(-len(data) % 512))
    return out.getvalue()


def textdump_device(path: str, tar: bytes, **hdr) -> str:
    """A dump partition holding a textdump: blocks in reverse order."""
    blocks = [tar[i:i + 512] for i in range(0, len(tar), 512)]
    reversed_ = b"".join(reversed(blocks))
    hdr.setdefault("magic", b"FreeBSD Text Dump")
    return device_image(path, reversed_, **hdr)


# -- savecore's info.N ----------------------------------------------------------

def info_text(*, device: str = "/dev/ada0p3", arch: str = "amd64", archver: int = 2,
              length: int = 0, blocksize: int = 512, compression: str = "none",
              dumptime: int = 1700000000, hostname: str = "crashbox",
              magic: str = "FreeBSD Kernel Dump", versionstring: str = "",
              panic: str = "", parity: int = 0, bounds: int = 0,
              status: str = "good") -> str:
    """savecore's ``printheader`` as written into info.N (text style)."""
    t = time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime(dumptime))
    return (f"Dump header from device: {device}\n"
            f"  Architecture: {arch}\n"
            f"  Architecture Version: {archver}\n"
            f"  Dump Length: {length}\n"
            f"  Blocksize: {blocksize}\n"
            f"  Compression: {compression}\n"
            f"  Dumptime: {t}\n"
            f"  Hostname: {hostname}\n"
            f"  Magic: {magic}\n"
            f"  Version String: {versionstring}"
            f"  Panic String: {panic}\n"
            f"  Dump Parity: {parity}\n"
            f"  Bounds: {bounds}\n"
            f"  Dump Status: {status}\n")


def write(path: str, data: bytes) -> str:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path
