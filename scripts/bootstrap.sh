#!/usr/bin/env bash
# Install what kvm_dbg needs on Debian 12 (idempotent): debuggers (liblldb-16-dev:
# lldb's Python module links to its liblldb.so, for standalone SB API programs), yaml2obj,
# pyelftools, zstandard, cryptography and tqdm for the debuggers' own Python
# (compressed and encrypted dumps opened from gdb/lldb), the zstd CLI (the
# decompression benchmark's reference), gcc/binutils and the Debian cross
# compilers (examples/build.py --arch ARCH: the examples' rebuild tests, DWARF
# fixtures; powerpc uses powerpc64's -m32), and a project venv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(gdb gdb-multiarch lldb-16 python3-lldb-16 liblldb-16-dev python3-pyelftools llvm bzip2 python3-venv
          gcc binutils zstd gzip python3-zstandard python3-cryptography python3-tqdm
          gcc-i686-linux-gnu gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf
          gcc-riscv64-linux-gnu gcc-powerpc64-linux-gnu gcc-mips-linux-gnu)
missing=()
for pkg in "${APT_PKGS[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "bootstrap: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test]' ruff
