"""Kernel ELF symbol facts the dump cannot give: sizes and address -> function.

They come from the descriptor's own :class:`~kvm_dbg.elfkernel.KernelImage`
(one parse of the symbol table per kernel, shared with the resolver); for a
bare path, a cached ``KernelImage`` is opened.  Without a kernel file
everything here answers None.  A kernel running displaced from its link
address (powerpc64: ``kvm_kerndisp``) has run-time pcs: :func:`for_kvm`
then answers in run-time addresses.
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


class Displaced:
    """A kernel image's code symbols at run-time addresses (link + ``disp``)."""

    def __init__(self, image: KernelImage, disp: int) -> None:
        self.image, self.disp = image, disp

    def function_at(self, pc: int) -> Optional[Tuple[str, int]]:
        hit = self.image.function_at((pc - self.disp) % (1 << 64))
        return None if hit is None else (hit[0], (hit[1] + self.disp) % (1 << 64))

    def size(self, name: str) -> Optional[int]:
        return self.image.size(name)


def for_kvm(kvm: Any) -> Any:
    """Kernel symbols for a Kvm (``function_at``, ``size``): its own image when
    open, else by path; displaced by ``kvm.kerndisp`` when the kernel runs
    away from its link address.  None without a kernel file."""
    image = getattr(kvm, "kernel", None)
    if not isinstance(image, KernelImage):
        path = kernel_path(kvm)
        image = load(path) if path else None
    disp = getattr(kvm, "kerndisp", 0)
    if image is not None and isinstance(disp, int) and disp:
        return Displaced(image, disp)
    return image


def file_bytes(path: str, name: str, maxlen: int) -> Optional[bytes]:
    """Initial bytes of a data symbol as stored in the ELF FILE (not the dump)."""
    image = load(path)
    if image is None:
        return None
    try:
        return image.symbol_file_bytes(name, maxlen)
    except KvmError:
        return None
