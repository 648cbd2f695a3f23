"""Warnings other than "klds: X: no symbol file found": kvm_dbg.open reports each
loaded module whose file it cannot find (tests/test_modules.py checks them);
fixtures that have modules but no module files expect only those."""


def other_warnings(warnings):
    return [w for w in warnings if not (w.startswith("klds: ") and "no symbol file found" in w)]
