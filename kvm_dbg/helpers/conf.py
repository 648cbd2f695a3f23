"""The kernel's configuration file (``options INCLUDE_CONFIG_FILE``): config(8)
stores it as ``kernconfstring`` in an ELF section named ``kern_conf``; ``config -x
kernel`` prints it.  Read from the dump's memory, else from the kernel file."""

from __future__ import annotations

from typing import Any, Optional

from ._common import has_symbol

MAX_BYTES = 1 << 20


def kern_conf(prog: Any) -> str:
    """The configuration text; LookupError if the kernel was built without
    INCLUDE_CONFIG_FILE (no ``kernconfstring``, no ``kern_conf`` section)."""
    import drgn
    if has_symbol(prog, "kernconfstring"):
        addr = prog.symbol("kernconfstring").address
        try:
            raw: Optional[bytes] = _cstring(prog, addr)
        except drgn.FaultError:
            raw = _from_file(prog, "kernconfstring")
        if raw is not None:
            return raw.decode("utf-8", "replace")
    raw = _section(prog)
    if raw is None:
        raise LookupError("kernel built without INCLUDE_CONFIG_FILE (no kernconfstring)")
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _cstring(prog: Any, addr: int) -> bytes:
    out = bytearray()
    while len(out) < MAX_BYTES:
        chunk = prog.read(addr + len(out), min(4096 - (addr + len(out)) % 4096, 4096))
        end = chunk.find(b"\0")
        if end >= 0:
            return bytes(out + chunk[:end])
        out += chunk
    return bytes(out)


def _kernel_path(prog: Any) -> Optional[str]:
    from ..drgn import kvm
    return kvm(prog).kernel_path


def _from_file(prog: Any, name: str) -> Optional[bytes]:
    from ..kstate.ksyms import file_bytes
    path = _kernel_path(prog)
    raw = file_bytes(path, name, MAX_BYTES) if path else None
    return raw.split(b"\0", 1)[0] if raw else None


def _section(prog: Any) -> Optional[bytes]:
    from ..kstate.ksyms import load
    path = _kernel_path(prog)
    image = load(path) if path else None
    if image is None:
        return None
    for s in image.sections:
        if s.name == "kern_conf" and 0 < s.size <= MAX_BYTES:
            with open(path, "rb") as f:
                f.seek(s.offset)
                return f.read(s.size)
    return None
