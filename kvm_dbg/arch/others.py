"""Registers the readers of every architecture besides amd64, i386 and arm64."""

from . import arm, mips, riscv  # noqa: F401  (registration side effects)

try:
    from . import powerpc, powerpc64  # noqa: F401
except ImportError:  # pragma: no cover - while the powerpc readers are optional
    pass
