"""Rebuild the bundled example dump (examples/*.gz) with the fixture generator."""

from __future__ import annotations

import gzip
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fixturegen import build  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fx = build("amd64", "minidump", 3, tmp, msgbuf=b"panic: example crash\n")
        for src, name in ((fx.kernel_path, "kernel"), (fx.core_path, "vmcore.0")):
            with open(src, "rb") as f, gzip.GzipFile(HERE / f"{name}.gz", "wb", mtime=0) as g:
                shutil.copyfileobj(f, g)
    print("wrote", HERE / "kernel.gz", HERE / "vmcore.0.gz")


if __name__ == "__main__":
    main()
