"""Decoded copies of dumps: where they live, how they are named, how they are
written so that a half-written one is never trusted.

A compressed or encrypted dump is decoded once into a plain file that the
readers then memory-map.  The copy goes next to the dump when that directory
is writable, else under ``$XDG_CACHE_HOME/kvm-dbg`` (``~/.cache/kvm-dbg``),
or wherever ``cache_dir`` / ``$KVM_DBG_CACHE_DIR`` says.  Its name carries a
key made of the source's size, modification time, the first MiB's SHA-256
and the decoding recipe, so an edited or replaced dump never matches an old
copy.  It is written to a temporary name (mode 0600, zero runs left as holes,
as savecore does) and renamed into place only when complete; an exclusive
lock keeps two openers from decoding the same dump at once.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from typing import Callable, Iterator, List, Optional

from ..errors import KvmError

SUFFIX = ".kvm-dbg-cache"
HEAD = 1 << 20
_HOLE = 1 << 16
_ZERO = bytes(_HOLE)
Producer = Callable[[Callable[[bytes], None]], int]


def user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kvm-dbg")


def directories(source: str, cache_dir: Optional[str] = None) -> List[str]:
    """Candidate directories, in order of preference."""
    explicit = cache_dir or os.environ.get("KVM_DBG_CACHE_DIR")
    if explicit:
        return [os.path.abspath(os.path.expanduser(explicit))]
    return [os.path.dirname(os.path.abspath(source)), user_cache_dir()]


def key(source: str, recipe: str) -> str:
    """Hex key of ``source`` (size, mtime, first MiB) decoded by ``recipe``."""
    st = os.stat(source)
    h = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:{recipe}:".encode())
    with open(source, "rb") as f:
        h.update(f.read(HEAD))
    return h.hexdigest()[:20]


def name(source: str, k: str) -> str:
    return f"{os.path.basename(source)}.{k}{SUFFIX}"


def lookup(source: str, k: str, cache_dir: Optional[str] = None) -> Optional[str]:
    """The complete decoded copy, if one exists."""
    for d in directories(source, cache_dir):
        cand = os.path.join(d, name(source, k))
        if os.path.isfile(cand):
            return cand
    return None


def _writable_dirs(source: str, cache_dir: Optional[str]) -> Iterator[str]:
    for d in directories(source, cache_dir):
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK | os.X_OK):
            yield d


class _SparseWriter:
    """Writes chunks, seeking over 64 KiB runs of zeros (holes on disk)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pos = 0

    def __call__(self, data: bytes) -> None:
        mv = memoryview(data)
        n = len(mv)
        i = 0
        while i < n:
            j = min(n, i + _HOLE)
            piece = mv[i:j]
            if j - i == _HOLE and piece == _ZERO:
                self.pos += _HOLE
            else:
                os.pwrite(self.fd, piece, self.pos)
                self.pos += j - i
            i = j

    def finish(self) -> None:
        os.ftruncate(self.fd, self.pos)


def _lock(path: str):
    """An exclusive advisory lock held while the returned file stays open."""
    try:
        import fcntl
    except ImportError:       # not POSIX: no lock, the rename still protects readers
        return None
    f = open(path, "a+b")  # noqa: SIM115 - held open for the lock's lifetime
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    return f


def build(source: str, k: str, produce: Producer, cache_dir: Optional[str] = None,
          what: str = "decoded copy") -> str:
    """Run ``produce(write)`` into a new cache file and return its path."""
    tried = []
    for d in _writable_dirs(source, cache_dir):
        final = os.path.join(d, name(source, k))
        lockf = None
        lockpath = os.path.join(d, "." + name(source, k) + ".lock")
        try:
            lockf = _lock(lockpath)
        except OSError:
            pass
        try:
            if os.path.isfile(final):           # another opener finished it meanwhile
                return final
            try:
                fd, tmp = tempfile.mkstemp(prefix="." + name(source, k) + ".", suffix=".partial",
                                           dir=d)
            except OSError as e:
                tried.append(f"{d}: {e.strerror}")
                continue
            w = _SparseWriter(fd)
            try:
                produce(w)
                w.finish()
                os.fsync(fd)
            except KvmError:
                os.close(fd)
                os.unlink(tmp)
                raise
            except OSError as e:
                os.close(fd)
                os.unlink(tmp)
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise KvmError(f"no space left in {d} for its {what} ({w.pos >> 20} MiB "
                                   "written): free some, or choose a directory with "
                                   "--cache-dir", path=source) from None
                raise KvmError(f"cannot write its {what} in {d}: {e.strerror}",
                               path=source) from None
            except BaseException:
                os.close(fd)
                os.unlink(tmp)
                raise
            os.close(fd)
            os.replace(tmp, final)
            _drop_stale(d, source, final)
            return final
        finally:
            if lockf is not None:       # waiters re-check ``final`` once they hold it
                try:
                    os.unlink(lockpath)
                except OSError:
                    pass
                lockf.close()
    where = "; ".join(tried) or ", ".join(directories(source, cache_dir))
    raise KvmError(f"no writable directory for its {what} (tried {where}): choose one "
                   "with --cache-dir", path=source)


def _drop_stale(d: str, source: str, keep: str) -> None:
    """Remove older decoded copies of the same dump name (a reused vmcore.N)."""
    prefix = os.path.basename(source) + "."
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        p = os.path.join(d, n)
        if n.startswith(prefix) and n.endswith(SUFFIX) and p != keep \
                and len(n) == len(os.path.basename(keep)):
            try:
                os.unlink(p)
            except OSError:
                pass
