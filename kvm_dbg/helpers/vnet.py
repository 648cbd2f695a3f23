"""Virtualized network stacks (net/vnet.h): ``VNET_FOREACH`` and ``V_`` variables.

With ``options VIMAGE`` a variable ``n`` is ``vnet_entry_n`` in the ``set_vnet``
linker set (the master copy) and each vnet's instance is at
``vnet->vnet_data_base + &vnet_entry_n``; without VIMAGE it is the global ``n``.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

from ._common import has_symbol
from .queue import LIST_FOREACH

VNET_MAGIC_N = 0x5E4A6F28


def VNET_FOREACH(prog: Any) -> Iterator[Any]:
    """``VNET_FOREACH(vnet)``: every ``struct vnet *`` on ``vnet_head``."""
    return LIST_FOREACH(prog["vnet_head"], "vnet_le")


def VNET(prog: Any, name: str, vnet: Optional[Any] = None) -> Any:
    """``VNET_VNET(vnet, name)`` (``V_name`` in ``vnet``, default ``vnet0``): the
    variable itself, typed.  ValueError if ``vnet`` is not a live vnet."""
    import drgn
    if not has_symbol(prog, "vnet_entry_" + name):
        return prog[name]                     # kernel without VIMAGE
    var = prog["vnet_entry_" + name]
    if vnet is None:
        vnet = prog["vnet0"]
    if vnet.vnet_magic_n.value_() != VNET_MAGIC_N:
        raise ValueError(f"vnet at {vnet.value_():#x}: bad magic "
                         f"{vnet.vnet_magic_n.value_():#x}")
    if has_symbol(prog, "__start_set_vnet") and not (
            prog.symbol("__start_set_vnet").address <= var.address_
            < prog.symbol("__stop_set_vnet").address):
        raise ValueError(f"vnet_entry_{name} is not in the kernel's set_vnet")
    mask = (1 << (64 if prog.platform.flags & drgn.PlatformFlags.IS_64_BIT else 32)) - 1
    addr = (vnet.vnet_data_base.value_() + var.address_) & mask
    return drgn.Object(prog, var.type_, address=addr)
