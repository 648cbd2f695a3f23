"""Kernel ELF symbol facts the dump cannot give: sizes and address -> function.

They come from the descriptor's own :class:`~kvm_dbg.elfkernel.KernelImage`
(one parse of the symbol table per kernel, shared with the resolver); for a
bare path, a cached ``KernelImage`` is opened.  Without a kernel file
everything here answers None.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, Optional, Tuple

from ..elfkernel import KernelImage
from ..errors import KvmError

_cache: Dict[Tuple[str, float], KernelImage] = {}
_lock = threading.Lock()


def load(path: str) -> Optional[KernelImage]:
    """The kernel image at ``path`` (cached by path and mtime), or None."""
    try:
        key = (path, os.stat(path).st_mtime)
    except OSError:
        return None
    with _lock:
        hit = _cache.get(key)
        if hit is None:
            try:
                hit = KernelImage(path)
            except KvmError:
                return None
            _cache[key] = hit
    return hit


def kernel_path(kvm: Any) -> Optional[str]:
    """The kernel file a Kvm was opened with, if it says."""
    path = getattr(kvm, "kernel_path", None)
    if not path:
        path = getattr(getattr(kvm, "kernel", None), "path", None)
    return path if isinstance(path, str) else None


def for_kvm(kvm: Any) -> Optional[KernelImage]:
    """Kernel symbols for a Kvm: its own image when open, else by path."""
    image = getattr(kvm, "kernel", None)
    if isinstance(image, KernelImage):
        return image
    path = kernel_path(kvm)
    return load(path) if path else None


def file_bytes(path: str, name: str, maxlen: int) -> Optional[bytes]:
    """Initial bytes of a data symbol as stored in the ELF FILE (not the dump)."""
    image = load(path)
    if image is None:
        return None
    try:
        return image.symbol_file_bytes(name, maxlen)
    except KvmError:
        return None
