"""Process helpers shared by the debugger-plugin tests."""

from __future__ import annotations

import time


def gone(pid: int, wait: float) -> bool:
    """True once ``pid`` has exited (or is a zombie) within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False
