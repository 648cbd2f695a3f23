"""DDB textdumps: the ustar file ``textdump.tar.N`` that ``textdump dump``
writes instead of memory (freebsd-src ``sys/ddb/db_textdump.c``): ``ddb.txt``
(captured ddb output), ``config.txt`` (kernel configuration), ``msgbuf.txt``,
``panic.txt`` and ``version.txt``.  The archive has no end-of-archive blocks.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from typing import Dict, Optional

from ..errors import KvmError

MEMBERS = ("ddb.txt", "config.txt", "msgbuf.txt", "panic.txt", "version.txt")
MAX_MEMBER = 64 << 20


@dataclass
class Textdump:
    """The text files of a textdump (raw bytes by name)."""

    path: str
    files: Dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str) -> Textdump:
        td = cls(path)
        try:
            with tarfile.open(path, "r:") as tar:
                for m in tar:
                    if not m.isfile():
                        continue
                    if m.size > MAX_MEMBER:
                        raise KvmError(f"textdump member {m.name} is implausibly large "
                                       f"({m.size} bytes)", path=path)
                    f = tar.extractfile(m)
                    if f is not None:
                        td.files[m.name] = f.read()
        except (tarfile.TarError, OSError, EOFError) as e:
            if not td.files:
                raise KvmError(f"not a readable textdump tar file: {e}", path=path) from None
        if not td.files:
            raise KvmError("textdump holds no files", path=path)
        return td

    def text(self, name: str) -> Optional[str]:
        raw = self.files.get(name)
        return None if raw is None else raw.decode("utf-8", "backslashreplace")

    @property
    def panic(self) -> Optional[str]:
        t = self.text("panic.txt")
        return t.rstrip("\0\n") if t is not None else None

    @property
    def version(self) -> Optional[str]:
        return self.text("version.txt")

    @property
    def msgbuf(self) -> Optional[str]:
        return self.text("msgbuf.txt")

    @property
    def ddb(self) -> Optional[str]:
        return self.text("ddb.txt")

    @property
    def config(self) -> Optional[str]:
        return self.text("config.txt")
