"""The lines a server process prints for the adapter that started it.

``kvm_dbg.rsp: listening on ADDRESS`` (stdout) once the server is ready;
``kvm_dbg.rsp: error: MESSAGE`` (stderr) when it cannot open the dump, and
whenever it hits an internal error while answering a debugger, so the
adapter can show that line to the user (``ServerProcess.new_errors``).
"""

from __future__ import annotations

import sys

READY_PREFIX = "kvm_dbg.rsp: listening on "
ERROR_PREFIX = "kvm_dbg.rsp: error: "


def error_line(message: str) -> None:
    """Print one error line on stderr (the message's first line only)."""
    first = (message.strip().splitlines() or [""])[0]
    sys.stderr.write(f"{ERROR_PREFIX}{first}\n")
    sys.stderr.flush()
