"""A progress bar on stderr while a dump is decompressed or decrypted.

tqdm when it is installed (the ``progress`` extra; Debian python3-tqdm, so
the debuggers' /usr/bin/python3 has it too): one small dependency-free
module that draws on stderr, adapts to the terminal width, shows rate and
time left, and turns itself off when stderr is not a terminal.  Without
tqdm, a one-line percentage.  Nothing is drawn unless stderr is a terminal
(or ``KVM_DBG_PROGRESS=1``); ``KVM_DBG_PROGRESS=0`` silences it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional


def wanted(stream=None) -> bool:
    env = os.environ.get("KVM_DBG_PROGRESS")
    if env in ("0", "1"):
        return env == "1"
    stream = stream or sys.stderr
    try:
        stream.fileno()
    except (AttributeError, ValueError, OSError):
        # gdb's and lldb's sys.stderr are not files: ask the process's stderr
        try:
            return os.isatty(2)
        except OSError:
            return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class _Plain:
    """The fallback: ``desc: 42% (1.2 of 2.9 GiB)`` redrawn at most 4 times a second."""

    def __init__(self, total: int, desc: str, stream) -> None:
        self.total, self.desc, self.stream = total, desc, stream
        self.n = 0
        self.last = 0.0

    def update(self, n: int) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= 0.25:
            self.last = now
            self._draw()

    def _draw(self) -> None:
        pct = 100 * self.n // self.total if self.total else 0
        self.stream.write(f"\r{self.desc}: {pct:3d}% ({self.n / (1 << 30):.1f} of "
                          f"{self.total / (1 << 30):.1f} GiB)")
        self.stream.flush()

    def close(self) -> None:
        self._draw()
        self.stream.write("\n")
        self.stream.flush()


class _Null:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def bar(total: int, desc: str, enabled: Optional[bool] = None):
    """An object with ``update(nbytes)`` and ``close()``."""
    stream = sys.stderr
    if not (wanted(stream) if enabled is None else enabled):
        return _Null()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Plain(total, desc, stream)
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=stream, leave=True, dynamic_ncols=True, mininterval=0.25)
