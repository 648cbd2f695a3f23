"""Encrypted kernel dumps: the key blob and the stream ciphers, with
decryptcore(8)'s rules (freebsd-src ``sbin/decryptcore/decryptcore.c``).

``struct kerneldumpkey`` (``sys/sys/kerneldump.h``, packed): u8 algorithm
(1 AES-256-CBC, 2 ChaCha20), 32-byte IV, big-endian u32 size of the
RSA-encrypted key, the encrypted key.  The RSA key's modulus must be that
size; the key decrypts with OAEP, else with the formerly used PKCS #1 v1.5
padding, and must come out 64 bytes (``KERNELDUMP_KEY_MAX_SIZE``), of which
the cipher uses 32.  AES-256-CBC uses the first 16 IV bytes and no padding;
ChaCha20 starts at block counter 0 with the IV's first 8 bytes as nonce (the
kernel's ``chacha_ivsetup(iv, NULL)``; decryptcore's 16-byte OpenSSL IV).
Uses the ``cryptography`` library (the ``crypto`` extra).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

from ..errors import KvmError

KEY_HEADER = 37                  # 1 + 32 + 4
KEY_MAX_SIZE = 64
ALGORITHMS = {1: "AES-256-CBC", 2: "ChaCha20"}
INSTALL = ("install the cryptography package (pip install 'kvm-dbg[crypto]', or Debian's "
           "python3-cryptography)")


@dataclass(frozen=True)
class DumpKey:
    algorithm: int
    iv: bytes
    encrypted_key: bytes

    @property
    def algorithm_name(self) -> str:
        return ALGORITHMS.get(self.algorithm, f"unknown ({self.algorithm})")


def parse_key(blob: bytes, path: str) -> DumpKey:
    """Decode a key.N file (or the key area of a device image)."""
    if len(blob) < KEY_HEADER:
        raise KvmError(f"dump key too short ({len(blob)} bytes): unable to read key", path=path)
    alg = blob[0]
    iv = blob[1:33]
    (size,) = struct.unpack(">I", blob[33:37])
    if len(blob) < KEY_HEADER + size:
        raise KvmError(f"dump key truncated: it announces a {size}-byte encrypted key but "
                       f"holds {len(blob) - KEY_HEADER}", path=path)
    return DumpKey(alg, iv, blob[KEY_HEADER:KEY_HEADER + size])


def unwrap(dk: DumpKey, private_key_path: str, dump_key_path: str) -> bytes:
    """The dump's symmetric key, decrypted with the RSA private key (PEM)."""
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa
    except ImportError:
        raise KvmError(f"the dump is encrypted: {INSTALL}", path=dump_key_path) from None
    try:
        with open(private_key_path, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise KvmError(f"Unable to open {private_key_path}: {e.strerror}",
                       path=private_key_path) from None
    try:
        priv = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise KvmError(f"Unable to read data from {private_key_path}: not an unencrypted PEM "
                       f"private key ({e})", path=private_key_path) from None
    if not isinstance(priv, rsa.RSAPrivateKey):
        raise KvmError(f"{private_key_path} is not an RSA private key", path=private_key_path)
    size = priv.key_size // 8 + (1 if priv.key_size % 8 else 0)
    if size != len(dk.encrypted_key):
        raise KvmError(f"RSA modulus size mismatch: equals {8 * size}b and should be "
                       f"{8 * len(dk.encrypted_key)}b ({private_key_path} is not the key "
                       f"this dump was encrypted for)", path=dump_key_path)
    if dk.algorithm not in ALGORITHMS:
        raise KvmError(f"Invalid encryption algorithm ({dk.algorithm})", path=dump_key_path)
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(),
                        label=None)
    for pad in (oaep, padding.PKCS1v15()):
        try:
            key = priv.decrypt(dk.encrypted_key, pad)
        except ValueError:
            continue
        if len(key) == KEY_MAX_SIZE:
            return key
    raise KvmError(f"Unable to decrypt key with {private_key_path}: it is not the private key "
                   "this dump was encrypted for", path=dump_key_path)


class Decrypting:
    """A source whose ``read`` returns the plaintext of an inner source."""

    def __init__(self, inner, dk: DumpKey, key: bytes, path: str) -> None:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        if dk.algorithm == 1:
            cipher = Cipher(algorithms.AES(key[:32]), modes.CBC(dk.iv[:16]))
        else:
            cipher = Cipher(algorithms.ChaCha20(key[:32], bytes(8) + dk.iv[:8]), mode=None)
        self.ctx = cipher.decryptor()
        self.inner = inner
        self.block = 16 if dk.algorithm == 1 else 1
        self.path = path
        self.held = b""

    @property
    def pos(self) -> int:
        return self.inner.pos

    @property
    def base(self) -> int:
        return self.inner.base

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        if not data:
            if self.held:
                raise KvmError(f"encrypted data ends {len(self.held)} bytes into an "
                               "AES block: the file was cut short", path=self.path)
            return b""
        if self.block > 1:
            data = self.held + data
            cut = len(data) - len(data) % self.block
            data, self.held = data[:cut], data[cut:]
        return self.ctx.update(data)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def check_available(path: str) -> Optional[str]:
    """None when the cryptography package imports, else the install hint."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return INSTALL
    return None
