"""panic_info and the kernel-file symbol helper (needs yaml2obj for the ELF)."""

from __future__ import annotations

import subprocess

import pytest
from fakedump import FakeDump
from realdumps import yaml2obj

from kvm_dbg.kstate import ksyms, panic_info

RODATA = 0xFFFFFFFF81000000
FILE_VERSION = b"FreeBSD 13.1-RELEASE #0: built\n"

YAML = f"""--- !ELF
FileHeader:
  Class: ELFCLASS64
  Data: ELFDATA2LSB
  Type: ET_EXEC
  Machine: EM_X86_64
Sections:
  - Name: .text
    Type: SHT_PROGBITS
    Flags: [ SHF_ALLOC, SHF_EXECINSTR ]
    Address: 0xFFFFFFFF80200000
    Size: 0x1000
  - Name: .rodata
    Type: SHT_PROGBITS
    Flags: [ SHF_ALLOC ]
    Address: 0x{RODATA:X}
    Content: "{(bytes(16) + FILE_VERSION + bytes(17)).hex()}"
  - Name: .bss
    Type: SHT_NOBITS
    Flags: [ SHF_ALLOC, SHF_WRITE ]
    Address: 0xFFFFFFFF82000000
    Size: 0x100
Symbols:
  - Name: version
    Type: STT_OBJECT
    Section: .rodata
    Value: 0x{RODATA + 16:X}
    Size: 0x40
  - Name: stoppcbs
    Type: STT_OBJECT
    Section: .bss
    Value: 0xFFFFFFFF82000000
    Size: 0x8
  - Name: calltrap
    Type: STT_FUNC
    Section: .text
    Value: 0xFFFFFFFF80200100
    Size: 0x20
  - Name: Xtimerint
    Section: .text
    Value: 0xFFFFFFFF80200200
"""


@pytest.fixture(scope="module")
def kernel_file(tmp_path_factory):
    tool = yaml2obj()
    if not tool:
        pytest.skip("yaml2obj (LLVM) not found")
    d = tmp_path_factory.mktemp("kstate-elf")
    (d / "k.yaml").write_text(YAML)
    subprocess.run([tool, str(d / "k.yaml"), "-o", str(d / "kernel")], check=True)
    return str(d / "kernel")


def dump(version: bytes) -> FakeDump:
    kvm = FakeDump("amd64")
    kvm.define("version", RODATA + 16)
    kvm.store(RODATA + 16, version + b"\0")
    kvm.define("panicstr", 0x1000)
    kvm.put_ptr(0x1000, 0x2000)
    kvm.store(0x2000, b"page fault\0")
    kvm.define("osreldate", 0x3000)
    kvm.put_int(0x3000, 1301000, 4)
    kvm.define("dumptid", 0x3010)
    kvm.put_int(0x3010, 100123, 4)
    kvm.define("osrelease", 0x3020)
    kvm.store(0x3020, b"13.1-RELEASE\0")
    return kvm


def test_panic_info_and_match(kernel_file):
    kvm = dump(FILE_VERSION)
    kvm.kernel_path = kernel_file
    info = panic_info(kvm)
    assert info.panicstr == "page fault" and info.osreldate == 1301000
    assert info.dumptid == 100123 and info.osrelease == "13.1-RELEASE"
    assert info.version == FILE_VERSION.decode() == info.file_version
    assert info.version_mismatch is False and info.hostname is None


def test_version_mismatch(kernel_file):
    kvm = dump(b"FreeBSD 14.0-CURRENT #1\n")
    kvm.kernel_path = kernel_file
    assert panic_info(kvm).version_mismatch is True


def test_unknown_without_kernel_file():
    info = panic_info(dump(FILE_VERSION))
    assert info.file_version is None and info.version_mismatch is None
    empty = panic_info(FakeDump())
    assert empty.panicstr is None and empty.version is None and empty.osreldate is None


def test_kernel_symbols(kernel_file):
    syms = ksyms.load(kernel_file)
    assert syms.size("stoppcbs") == 8 and syms.size("nothing") is None
    assert syms.function_at(0xFFFFFFFF80200105) == ("calltrap", 0xFFFFFFFF80200100)
    assert syms.function_at(0xFFFFFFFF80200130) is None          # past calltrap's size
    assert syms.function_at(0xFFFFFFFF80200210)[0] == "Xtimerint"
    assert ksyms.load(kernel_file) is syms                       # cached
    assert ksyms.load("/nonexistent/kernel") is None
    assert ksyms.file_bytes(kernel_file, "stoppcbs", 8) is None   # NOBITS
