"""VNET and DPCPU symbols (libkvm's vnet_entry_/pcpu_entry_ retries and
relocation, api.md §8.2-8.3) on fixture dumps of 64- and 32-bit kernels, none
of them native to this host."""

from __future__ import annotations

import pytest
from fixturegen import build
from fixturegen.kernelstate import default_spec

import kvm_dbg
from kvm_dbg import KvmError, kvm_dpcpu_setcpu, kvm_geterr, kvm_nlist2, kvm_open2, nlist

CASES = [("amd64", 3, {}), ("arm64", 2, {}), ("i386", 2, {"pae": True})]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def vdump(request, tmp_path_factory):
    arch, version, opts = request.param
    d = tmp_path_factory.mktemp(f"virt-{arch}")
    fx = build(arch, "minidump", version, str(d), kstate=default_spec(arch, virt=True), **opts)
    return fx, fx.manifest.kstate.virt


def test_dpcpu_symbol_relocated_per_cpu(vdump):
    fx, v = vdump
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        assert kd.cpu == 0
        addr0, value0 = v["counters"][0]
        assert kd.symbol("pcpu_counter") == addr0            # pcpu_entry_ retried, CPU 0
        assert kd.read_int(kd.symbol("pcpu_counter"), 8) == value0
        assert kd.symbol("_pcpu_counter") == addr0           # one leading '_' dropped
        kd.set_cpu(1)
        assert kd.cpu == 1 and kd.read_int(kd.symbol("pcpu_counter"), 8) == 1001
        last = v["maxcpus"] - 1
        with pytest.raises(KvmError, match=f"_kvm_dpcpu_setcpu: CPU {last} not found"):
            kd.set_cpu(last)
        with pytest.raises(KvmError, match=f"_kvm_dpcpu_setcpu: CPU {last + 1} too big"):
            kd.set_cpu(last + 1)
        assert kd.cpu == 1
        # the prefixed name itself is the link-time address, unrelocated
        assert kd.symbol("pcpu_entry_pcpu_counter") == v["pset"] + 0x10


def test_vnet_symbol_relocated_per_vnet(vdump):
    fx, v = vdump
    (vnet0, var0, val0), (jail, var1, val1) = v["vnets"]
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        assert kd.vnet == vnet0                                # vnet0 by default
        assert kd.symbol("vnet_counter") == var0
        assert kd.read_int(kd.symbol("vnet_counter"), 8) == val0
        assert kd.vnets() == [jail, vnet0]
        kd.set_vnet(jail)
        assert kd.vnet == jail and kd.read_int(kd.symbol("vnet_counter"), 8) == val1
        with pytest.raises(KvmError, match="invalid vnet magic#"):
            kd.set_vnet(var0)
        assert kd.vnet == jail
        assert kd.lookup("no_such_variable") is None


def test_kvm_nlist2_retries_for_non_native(vdump):
    """libkvm refuses non-native cores here; kvm_dbg does the retries anyway."""
    fx, v = vdump
    err = bytearray(2048)
    kd = kvm_open2(fx.kernel_path, fx.core_path, 0, err, _elf_resolver(fx.kernel_path))
    assert kd is not None, err
    nl = [nlist("vnet_counter"), nlist("_pcpu_counter"), nlist("nosuch"), nlist(None)]
    assert kvm_nlist2(kd, nl) == 1
    assert nl[0].n_value == v["vnets"][0][1] and nl[1].n_value == v["counters"][0][0]
    assert nl[2].n_value == 0 and nl[2].n_type == 0
    assert kvm_dpcpu_setcpu(kd, 1) == 0
    kvm_nlist2(kd, nl)
    assert nl[1].n_value == v["counters"][1][0]
    assert kvm_dpcpu_setcpu(kd, 99) == -1
    assert kvm_geterr(kd) == "_kvm_dpcpu_setcpu: CPU 99 too big"


def _elf_resolver(kernel):
    from kvm_dbg.elfkernel import KernelImage
    img = KernelImage(kernel)
    return img.lookup


def test_no_virtual_sets(tmp_path):
    fx = build("amd64", "minidump", 3, str(tmp_path), kstate=default_spec("amd64"))
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        assert kd.vnet is None and kd.cpu is None
        with pytest.raises(KvmError, match="no VNET symbols in this kernel"):
            kd.set_vnet(0x1000)
        with pytest.raises(KvmError, match="_kvm_dpcpu_setcpu: not initialized"):
            kd.set_cpu(0)


def test_unrelocatable_vnet_symbol_is_the_master_copy_and_a_warning(vdump):
    """No vnet can be read (vnet0 points nowhere): libkvm answers the master copy's
    address; we do too, and say so in the warnings."""
    fx, v = vdump
    with kvm_dbg.open(fx.kernel_path, fx.core_path) as kd:
        master = kd.symbol("vnet_entry_vnet_counter")
        real_read_ptr = kd.read_ptr

        def read_ptr(addr: int) -> int:
            if addr == kd.lookup("vnet0"):
                raise kvm_dbg.KvmError("invalid address (0x1)")
            return real_read_ptr(addr)
        kd.read_ptr = read_ptr                              # vnet0 unreadable
        assert kd.symbol("vnet_counter") == master
        assert any(w.startswith("vnet_counter: vnet_entry_vnet_counter is not relocated")
                   for w in kd.warnings), kd.warnings
