"""kvm-dbg crashinfo: every section on the DWARF dumps (the bundled example of every architecture)
against the generator's bookkeeping, the text and JSON forms, the command line, and
the four real dumps (no DWARF), which must degrade section by section."""

from __future__ import annotations

import datetime
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dwarfdumps import DWARF_DUMPS, dwarf_dump, dwarf_dump_factory  # noqa: F401
from kldwarn import other_warnings

import kvm_dbg
from kvm_dbg import crashinfo, report

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "docs" / "cli-json-schema.json").read_text())
NOW = datetime.datetime(2024, 3, 5, 7, 8, 9, tzinfo=datetime.timezone.utc)
NOT_IMPLEMENTED = {"pstat_s", "iostat", "ipcs_a", "ipcs_T", "netstat_s", "netstat_m",
                   "netstat_anA", "netstat_aL", "fstat"}
_REPORTS: dict = {}


def validate(doc) -> None:
    import jsonschema
    jsonschema.validate(doc, dict(SCHEMA, **{"$ref": "#/$defs/crashinfo"}))


@pytest.fixture(params=DWARF_DUMPS)
def ci(request, dwarf_dump_factory):  # noqa: F811
    """(DwarfDump, its report, {section id: section})."""
    d = dwarf_dump_factory(request.param)
    if d.name not in _REPORTS:
        with kvm_dbg.open(d.kernel, d.core) as kd:
            _REPORTS[d.name] = crashinfo.report(kd, now=NOW)
    r = _REPORTS[d.name]
    return d, r, {s["id"]: s for s in r["sections"]}


def test_sections_in_crashinfo_order(ci):
    d, r, secs = ci
    assert [s["title"] for s in r["sections"][3:]] == [
        "ps -axlww", "vmstat -s", "vmstat -m", "vmstat -z", "vmstat -i", "pstat -T",
        "pstat -s", "iostat", "ipcs -a", "ipcs -T", "netstat -s", "netstat -m",
        "netstat -anA", "netstat -aL", "fstat", "dmesg", "kernel config",
        "ddb capture buffer"]
    assert r["drgn"] == {"used": True, "reason": None, "debug_info": True}
    for s in r["sections"]:
        if s["id"] in NOT_IMPLEMENTED:
            assert s["unavailable"] == "not implemented by kvm-dbg" and s["data"] is None
        else:
            assert s["unavailable"] is None and s["data"] is not None, s
    assert other_warnings(r["warnings"]) == []
    validate(r)


def test_header(ci):
    d, r, secs = ci
    h = secs["header"]["data"]
    assert h["hostname"] == d.kstate.hostname and h["osrelease"] == d.kstate.osrelease
    assert h["ostype"] == "FreeBSD" and h["machine"] == d.vm.machine
    assert h["version"] == " ".join(d.kstate.version.replace("\t", " ").split("\n")).strip()
    assert h["panic"] == d.kstate.panicstr and h["core"] == d.core
    assert r["date"] == "2024-03-05T07:08:09+00:00"


def test_backtrace_and_acttrace(ci):
    d, r, secs = ci
    bt = secs["backtrace"]["data"]
    assert bt["unread_msgbuf"] == d.kstate.msgbuf_unread
    crashed = d.kstate.thread(d.kstate.dumptid)
    assert bt["crashed"]["tid"] == crashed.tid
    assert [int(f["pc"], 16) for f in bt["crashed"]["backtrace"]] == crashed.backtrace
    assert [f["symbol"].split("+")[0] for f in bt["crashed"]["backtrace"]] == crashed.functions
    oncpu = sorted((t for t in d.kstate.threads if t.oncpu >= 0), key=lambda t: t.oncpu)
    assert [(t["tid"], t["oncpu"], t["comm"]) for t in bt["acttrace"]] == \
        [(t.tid, t.oncpu, t.comm) for t in oncpu]
    for t, e in zip(bt["acttrace"], oncpu):
        assert [f["symbol"].split("+")[0] for f in t["backtrace"]] == e.functions


def test_kstate_sections(ci):
    d, r, secs = ci
    with kvm_dbg.open(d.kernel, d.core) as kd:
        assert secs["ps"]["data"] == report.procs(kd)["procs"]
    assert [p["pid"] for p in secs["ps"]["data"]] == [p.pid for p in d.kstate.procs]
    assert [(k["name"], int(k["address"], 16)) for k in secs["kldstat"]["data"]] == \
        [(k.name, k.address) for k in d.kstate.klds]
    assert secs["dmesg"]["data"] == {"lines": d.kstate.msgbuf_text.rstrip("\n").split("\n"),
                                     "source": "msgbufp"}


def test_vmstat_s(ci):
    d, r, secs = ci
    data = secs["vmstat_s"]["data"]
    assert {row["field"]: row["value"] for row in data["rows"]} == \
        {f: v for f, v in d.vm.vmmeter.items() if f in {x["field"] for x in data["rows"]}}
    fields = [row["field"] for row in data["rows"]]
    assert len(fields) == 37 and fields[0] == "v_swtch" and fields[-1] == "v_page_size"
    assert data["missing"] == ["v_active_count", "v_inactive_count", "v_laundry_count",
                               "v_user_wire_count", "v_free_count"]


def test_vmstat_m(ci):
    d, r, secs = ci
    exp = [m for m in d.vm.malloc if m["requests"] or m["inuse"]]
    assert [m["type"] for m in exp] != [m["type"] for m in d.vm.malloc]   # one is idle
    assert secs["vmstat_m"]["data"]["types"] == [
        {"type": m["type"], "inuse": m["inuse"], "memuse_kb": (m["memuse_bytes"] + 1023) // 1024,
         "requests": m["requests"], "sizes": m["sizes"]} for m in exp]


def test_vmstat_z(ci):
    d, r, secs = ci
    assert secs["vmstat_z"]["data"]["zones"] == [
        {k: v for k, v in z.items() if k != "address"} for z in d.vm.zones]


def test_vmstat_i(ci):
    d, r, secs = ci
    data = secs["vmstat_i"]["data"]
    up = d.vm.time_uptime
    assert data["uptime_seconds"] == up
    assert data["interrupts"] == [
        {"name": n.rstrip(), "total": c, "rate": (c * 1000 + up * 500) // (up * 1000)}
        for n, c in d.vm.intr if c]
    assert data["total"] == sum(c for _, c in d.vm.intr)


def test_pstat_config_ddb(ci):
    d, r, secs = ci
    assert secs["pstat_T"]["data"]["openfiles"] == d.vm.openfiles
    assert secs["pstat_T"]["data"]["maxfiles"] == d.vm.maxfiles
    assert secs["kernel_config"]["data"] == {"text": d.vm.kernconf}
    assert secs["ddb_capture"]["data"] == {"text": d.vm.capture}


def test_text_form(ci):
    d, r, secs = ci
    text = crashinfo.render(r)
    lines = text.split("\n")
    assert lines[0] == f"{d.kstate.hostname} dumped core - see {d.core}"
    assert lines[2] == "Tue Mar  5 07:08:09 UTC 2024"
    assert lines[6] == f"panic: {d.kstate.panicstr}"
    for s in r["sections"][2:]:
        assert f"{'-' * 72}\n{s['title']}\n" in text
    for s in NOT_IMPLEMENTED:
        title = next(x["title"] for x in r["sections"] if x["id"] == s)
        assert f"\n{title}\n\nnot available: not implemented by kvm-dbg\n" in text
    crashed = d.kstate.thread(d.kstate.dumptid)
    assert f"Tracing command {crashed.comm} pid {crashed.pid} tid {crashed.tid} " \
           f"(CPU {crashed.oncpu})" in text
    assert f"#0  0x{crashed.backtrace[0]:x} in {crashed.functions[0]}+" in text
    zone = d.vm.zones[1]
    assert re.search(rf"^{zone['name']}:\s+{zone['size']},\s+{zone['limit']},\s+"
                     rf"{zone['used']},\s+{zone['free']},\s+{zone['requests']},", text, re.M)
    name, count = max(d.vm.intr, key=lambda x: x[1])
    assert re.search(rf"^{re.escape(name.rstrip())}\s+{count}\s+\d+$", text, re.M)
    assert f"{d.vm.vmmeter['v_swtch']:9d} cpu context switches" in text
    assert f"{d.vm.openfiles:3d}/{d.vm.maxfiles:3d} files" in text
    assert d.vm.kernconf in text and d.vm.capture in text


def _cli(*args, check=0):
    p = subprocess.run([sys.executable, "-m", "kvm_dbg.cli", *args], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == check, p.stderr
    return p.stdout


def _no_date(text: str) -> str:
    return re.sub(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d UTC \d{4}$", "DATE", text, count=1,
                  flags=re.M)


def test_cli_text_json_and_output_file(tmp_path, example):
    k, c = str(example / "kernel"), str(example / "vmcore.0")
    text = _cli("crashinfo", k, c)
    doc = json.loads(_cli("crashinfo", "--json", k, c))
    validate(doc)
    assert _no_date(text) == _no_date(crashinfo.render(doc))
    out = tmp_path / "core.txt.0"
    assert _cli("crashinfo", k, c, "-o", str(out)).strip() == \
        f"Writing crash summary to {out}."
    assert _no_date(out.read_text()) == _no_date(text)
    _cli("crashinfo", "--json", k, c, "-o", str(tmp_path / "c.json"))
    validate(json.loads((tmp_path / "c.json").read_text()))
    crashdir = tmp_path / "crash"
    crashdir.mkdir()
    shutil.copy(example / "vmcore.0", crashdir / "vmcore.0")
    shutil.copy(example / "kernel", crashdir / "kernel.0")
    assert _no_date(_cli("crashinfo", "-n", "0", "--crashdir", str(crashdir))) == \
        _no_date(text).replace(str(example), str(crashdir))   # the dump, and where klds are sought
    no = json.loads(_cli("crashinfo", "--json", "--no-drgn", k, c))
    secs = {s["id"]: s for s in no["sections"]}
    assert secs["vmstat_m"]["unavailable"] == "needs drgn: drgn not used (--no-drgn)"
    assert secs["ps"]["data"] == doc["sections"][3]["data"]
    err = subprocess.run([sys.executable, "-m", "kvm_dbg.cli", "crashinfo", k,
                          str(tmp_path / "missing")], capture_output=True, text=True)
    assert err.returncode == 1 and err.stderr.startswith("kvm-dbg: ") and \
        "Traceback" not in err.stderr


def test_damaged_structures_cost_one_section(tmp_path, example):
    """A garbage ``uma_kegs`` pointer and a looping kmemstatistics chain: vmstat -z
    and -m say why in one line, every other section is unchanged."""
    k, c = str(example / "kernel"), str(example / "vmcore.0")
    with kvm_dbg.open(k, c) as kd:
        good = crashinfo.report(kd, now=NOW)
        kegs = kd.translate(kd.lookup("uma_kegs"))
        mt = kd.read_ptr(kd.lookup("kmemstatistics"))
        second = kd.read_ptr(mt)                                  # ks_next
        loop_at = kd.translate(second)
    core = tmp_path / "vmcore.0"
    data = bytearray(Path(c).read_bytes())
    data[kegs:kegs + 8] = (0x10).to_bytes(8, "little")
    data[loop_at:loop_at + 8] = mt.to_bytes(8, "little")         # second -> first again
    core.write_bytes(bytes(data))
    with kvm_dbg.open(k, str(core)) as kd:
        bad = crashinfo.report(kd, now=NOW)
    validate(bad)
    g = {s["id"]: s for s in good["sections"]}
    b = {s["id"]: s for s in bad["sections"]}
    assert re.fullmatch(r"unreadable kernel memory at 0x[12]0", b["vmstat_z"]["unavailable"])
    assert b["vmstat_m"]["unavailable"] == f"kmemstatistics: loop at {mt:#x}"
    b["header"]["data"]["core"] = g["header"]["data"]["core"]
    for sid in g:
        if sid not in ("vmstat_z", "vmstat_m"):
            assert b[sid] == g[sid], sid


@pytest.mark.parametrize("name", ["vmcore-amd64-full", "vmcore-amd64-minidump",
                                  "vmcore-arm64-minidump", "vmcore-i386-minidump"])
def test_real_dumps_degrade_section_by_section(real_dump_factory, name):
    """The LLDB test dumps (symbols only, no DWARF, no msgbufp): the kstate sections
    come out, every other section says why in one line; no exception."""
    d = real_dump_factory(name)
    with kvm_dbg.open(d.kernel, d.core) as kd:
        r = crashinfo.report(kd, now=NOW)
    validate(r)
    secs = {s["id"]: s for s in r["sections"]}
    assert r["drgn"]["used"] is True and r["drgn"]["debug_info"] is False
    exp = d.expected
    assert secs["backtrace"]["data"]["crashed"]["name"] == exp["threads"]["0"]["name"]
    assert len(secs["ps"]["data"]) >= 1 and secs["header"]["unavailable"] is None
    for sid in ("vmstat_s", "vmstat_m", "vmstat_z"):
        assert secs[sid]["unavailable"].startswith("the kernel has no DWARF debug info")
    assert secs["vmstat_i"]["unavailable"] == "symbol sintrnames not found in this kernel"
    assert secs["pstat_T"]["unavailable"] == "symbol openfiles not found in this kernel"
    assert secs["kernel_config"]["unavailable"] == \
        "kernel built without INCLUDE_CONFIG_FILE (no kernconfstring)"
    assert secs["ddb_capture"]["unavailable"] == "symbol db_capture_buf not found in this kernel"
    if d.name.endswith("full"):         # no msgbufp; minidumps have their msgbuf section
        assert secs["dmesg"]["unavailable"] == \
            "no message buffer (msgbufp missing or unreadable)"
    else:
        assert secs["dmesg"]["data"]["source"] == "section"
    for s in r["sections"]:
        assert (s["data"] is None) != (s["unavailable"] is None), s["id"]
        assert s["unavailable"] is None or "\n" not in s["unavailable"]
    text = crashinfo.render(r)
    assert "Traceback" not in text and exp["threads"]["0"]["name"] in text
