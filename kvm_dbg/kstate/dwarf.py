"""Structure layouts from the kernel's DWARF (threads.md §1: kernels older than
10.3 lack the offset symbols; kgdb and JHB-GDB then read ``struct proc``,
``struct thread``, ``struct linker_file`` from DWARF), plus the fields no
symbol describes (``p_pptr``, ``p_state``) and ``sizeof(struct pcb)``.

Nothing is parsed until a layout is asked for, and then only the named
structures are looked for; the search stops as soon as they are found.
Search order: ``.debug_pubtypes`` when present; else only the units whose
bytes can name the structure (its ``.debug_str`` offset, the inline string,
or a ``.debug_str_offsets`` entry pointing at it); else (compressed or
relocatable sections, ambiguous strings) every unit, in order.  Each search is bounded
by ``KVM_DBG_DWARF_BUDGET`` seconds (default 30); running out gives a
warning.  Results, found or not, are cached per kernel file.
"""

from __future__ import annotations

import bisect
import mmap
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from .ksyms import kernel_path
from .memory import warn

BUDGET_ENV = "KVM_DBG_DWARF_BUDGET"
DEFAULT_BUDGET = 30.0
#: Top-level DIEs examined per search at most (a second bound besides time).
MAX_DIES = 10_000_000
#: Above this many ``.debug_str`` offsets per name, the unit pre-filter is skipped.
MAX_STR_PATTERNS = 64
MAX_NESTING = 8
#: Also kept when met while searching for another one (no extra parsing).
KNOWN_STRUCTS = frozenset({"proc", "thread", "pcb", "linker_file"})
SHF_COMPRESSED = 0x800

_QUALIFIERS = {"DW_TAG_typedef", "DW_TAG_const_type", "DW_TAG_volatile_type",
               "DW_TAG_restrict_type", "DW_TAG_atomic_type", "DW_TAG_immutable_type"}
_AGGREGATES = {"DW_TAG_structure_type", "DW_TAG_union_type"}
_REF_FORMS = {"DW_FORM_ref1", "DW_FORM_ref2", "DW_FORM_ref4", "DW_FORM_ref8",
              "DW_FORM_ref_udata", "DW_FORM_ref_addr", "DW_FORM_ref_sig8"}
#: Anything pyelftools may raise on odd or corrupt DWARF.
_ERRORS = (Exception,)


@dataclass(frozen=True)
class Member:
    """One member: byte offset from the start of the outermost structure asked
    about, size in bytes, enumerator names when its type is an enum, and the
    nested layout when it is a structure or union held by value."""

    name: str
    offset: int
    size: Optional[int] = None
    enum: Optional[Dict[int, str]] = None
    layout: Optional[Layout] = None


@dataclass(frozen=True)
class Layout:
    """A ``struct``/``union`` as DWARF describes it."""

    name: str
    size: Optional[int]
    members: Tuple[Member, ...]

    def member(self, path: str) -> Optional[Member]:
        """The member at a dotted path (``link.tqe_next``); members of anonymous
        structures/unions are found as if they were direct members."""
        layout: Optional[Layout] = self
        base = 0
        found: Optional[Member] = None
        for part in path.split("."):
            if layout is None:
                return None
            hit = layout._find(part)
            if hit is None:
                return None
            found, extra = hit
            base += extra + found.offset
            layout = found.layout
        return None if found is None else replace(found, offset=base)

    def offset(self, path: str) -> Optional[int]:
        m = self.member(path)
        return None if m is None else m.offset

    def _find(self, name: str, depth: int = 0) -> Optional[Tuple[Member, int]]:
        for m in self.members:
            if m.name == name:
                return m, 0
        if depth < MAX_NESTING:
            for m in self.members:
                if not m.name and m.layout is not None:
                    hit = m.layout._find(name, depth + 1)
                    if hit is not None:
                        return hit[0], hit[1] + m.offset
        return None


def _uleb(data: bytes, pos: int) -> Tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return value, pos


def _expr_offset(expr: bytes) -> Optional[int]:
    """The constant of a member-location expression: ``DW_OP_plus_uconst N``
    (gcc's DWARF 2/3), ``DW_OP_constu N [DW_OP_plus]`` or ``DW_OP_litN``."""
    if not expr:
        return None
    op = expr[0]
    if op in (0x23, 0x10):                        # DW_OP_plus_uconst, DW_OP_constu
        value, pos = _uleb(expr, 1)
        return value if expr[pos:] in (b"", b"\x22") else None
    if 0x30 <= op <= 0x4F and expr[1:] in (b"", b"\x22"):   # DW_OP_lit0..31 [plus]
        return op - 0x30
    return None


def _member_offset(die: Any) -> Optional[int]:
    attrs = die.attributes
    loc = attrs.get("DW_AT_data_member_location")
    if loc is None:
        bit = attrs.get("DW_AT_data_bit_offset")      # DWARF 4 bit-fields
        if bit is not None and isinstance(bit.value, int):
            return bit.value // 8
        return 0                                       # union members
    if isinstance(loc.value, int):
        return loc.value
    if isinstance(loc.value, (list, bytes)):
        return _expr_offset(bytes(loc.value))
    return None


def _name(die: Any) -> Optional[str]:
    attr = die.attributes.get("DW_AT_name")
    if attr is None:
        return None
    v = attr.value
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _ref(die: Any, attr: str = "DW_AT_type") -> Optional[Any]:
    a = die.attributes.get(attr)
    if a is None or a.form not in _REF_FORMS:
        return None
    try:
        return die.get_DIE_from_attribute(attr)
    except _ERRORS:
        return None


def _strip(die: Optional[Any]) -> Optional[Any]:
    """Follow typedefs and qualifiers to the underlying type (None: void)."""
    for _ in range(32):
        if die is None or die.tag not in _QUALIFIERS:
            return die
        die = _ref(die)
    return None


def _int_attr(die: Any, name: str) -> Optional[int]:
    a = die.attributes.get(name)
    return a.value if a is not None and isinstance(a.value, int) else None


def _type_size(t: Optional[Any]) -> Optional[int]:
    """``sizeof`` of a (stripped) type DIE, or None."""
    if t is None:
        return None
    size = _int_attr(t, "DW_AT_byte_size")
    if size is not None:
        return size
    if t.tag in ("DW_TAG_pointer_type", "DW_TAG_reference_type", "DW_TAG_ptr_to_member_type"):
        return t.cu["address_size"]
    if t.tag == "DW_TAG_array_type":
        elem = _type_size(_strip(_ref(t)))
        if elem is None:
            return None
        total = elem
        for sub in t.iter_children():
            if sub.tag != "DW_TAG_subrange_type":
                continue
            count = _int_attr(sub, "DW_AT_count")
            if count is None:
                upper = _int_attr(sub, "DW_AT_upper_bound")
                if upper is None:
                    return None if _int_attr(sub, "DW_AT_lower_bound") is not None else 0
                count = upper - (_int_attr(sub, "DW_AT_lower_bound") or 0) + 1
            total *= max(count, 0)
        return total
    return None


def _enum_names(t: Any) -> Dict[int, str]:
    out: Dict[int, str] = {}
    for e in t.iter_children():
        value, name = _int_attr(e, "DW_AT_const_value"), _name(e)
        if e.tag == "DW_TAG_enumerator" and value is not None and name:
            out.setdefault(value, name)
    return out


def build_layout(die: Any, depth: int = 0) -> Layout:
    """The layout of a structure/union definition DIE."""
    members: List[Member] = []
    for child in die.iter_children():
        if child.tag != "DW_TAG_member" or "DW_AT_external" in child.attributes:
            continue                                   # static members have no offset
        off = _member_offset(child)
        if off is None:
            continue
        t = _strip(_ref(child))
        size = _int_attr(child, "DW_AT_byte_size") or _type_size(t)
        enum = nested = None
        if t is not None and t.tag == "DW_TAG_enumeration_type":
            enum = _enum_names(t) or None
        elif (t is not None and t.tag in _AGGREGATES and depth < MAX_NESTING
              and "DW_AT_declaration" not in t.attributes):
            nested = build_layout(t, depth + 1)
        members.append(Member(_name(child) or "", off, size, enum, nested))
    return Layout(_name(die) or "", _int_attr(die, "DW_AT_byte_size"), tuple(members))


def _is_definition(die: Any, names: Set[str]) -> Optional[str]:
    if die.tag != "DW_TAG_structure_type" or "DW_AT_declaration" in die.attributes:
        return None
    name = _name(die)
    if name in names and "DW_AT_byte_size" in die.attributes:
        return name
    return None


def _definition(die: Any, names: Set[str]) -> Tuple[Optional[str], Optional[Any]]:
    """(name, definition DIE) when ``die`` defines one of ``names``, directly
    or through ``DW_AT_signature`` (a type unit); else (None, None)."""
    if die.tag != "DW_TAG_structure_type":
        return None, None
    name = _is_definition(die, names)
    if name is not None:
        return name, die
    if "DW_AT_signature" in die.attributes and _name(die) in names:
        target = _ref(die, "DW_AT_signature")
        name = _is_definition(target, names) if target is not None else None
        if name is not None:
            return name, target
    return None, None


@dataclass(frozen=True)
class _Unit:
    offset: int
    end: int
    version: int
    offset_size: int


class KernelDwarf:
    """Lazily searched structure layouts of one kernel file."""

    def __init__(self, path: str, budget: Optional[float] = None) -> None:
        self.path = path
        self.budget = budget if budget is not None else _env_budget()
        self.warnings: List[str] = []
        #: what the searches cost: seconds, units parsed, top-level DIEs seen, method.
        self.stats: Dict[str, Any] = {"seconds": 0.0, "units": 0, "dies": 0, "method": None}
        self._lock = threading.RLock()
        self._state = 0                      # 0 unloaded, 1 loaded, -1 no DWARF
        self._dw: Any = None
        self._mm: Optional[mmap.mmap] = None
        self._secs: Dict[str, Tuple[int, int, int]] = {}
        self._order = "little"
        self._relocated = False
        self._units: Optional[List[_Unit]] = None
        self._str_bases: Optional[Dict[int, List[int]]] = None
        self._layouts: Dict[str, Optional[Layout]] = {}

    # -- public -----------------------------------------------------------
    @property
    def has_dwarf(self) -> bool:
        with self._lock:
            return self._load()

    def layout(self, name: str) -> Optional[Layout]:
        """``struct name`` or None (no DWARF, not found, or out of budget)."""
        return self.layouts([name])[name]

    def layouts(self, names: Iterable[str]) -> Dict[str, Optional[Layout]]:
        """Several structures with one search."""
        names = list(names)
        with self._lock:
            want = {n for n in names if n not in self._layouts}
            if want:
                t0 = time.monotonic()
                try:
                    if self._load():
                        self._search(want, t0)
                except _ERRORS as e:           # corrupt DWARF: give up on these names
                    self._warn(f"DWARF: cannot read structure layouts ({e})")
                self.stats["seconds"] += time.monotonic() - t0
                for n in want:
                    self._layouts.setdefault(n, None)
            return {n: self._layouts[n] for n in names}

    def close(self) -> None:
        with self._lock:
            mm, self._mm = self._mm, None
            if mm is not None:
                mm.close()

    # -- loading ----------------------------------------------------------
    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def _load(self) -> bool:
        if self._state:
            return self._state > 0
        self._state = -1
        from elftools.elf.elffile import ELFFile

        try:
            with open(self.path, "rb") as f:
                elf = ELFFile(f)
                self._order = "little" if elf.little_endian else "big"
                for s in elf.iter_sections():
                    if s.name.startswith((".debug_", ".zdebug_")):
                        self._secs[s.name] = (s["sh_offset"], s["sh_size"], s["sh_flags"])
                    elif s.name.startswith((".rela.debug_", ".rel.debug_")):
                        self._relocated = True       # raw bytes lack the string offsets
                if ".debug_info" not in self._secs and ".zdebug_info" not in self._secs:
                    return False
                self._dw = elf.get_dwarf_info()
                if not self._dw.has_debug_info:
                    return False
                try:
                    self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                except (OSError, ValueError):
                    self._mm = None
        except _ERRORS as e:
            self._warn(f"DWARF: cannot read {self.path}: {e}")
            return False
        self._state = 1
        return True

    def _cu(self, offset: int) -> Any:
        get = getattr(self._dw, "get_CU_at", None) or self._dw._parse_CU_at_offset
        return get(offset)

    # -- searching --------------------------------------------------------
    def _search(self, want: Set[str], t0: float) -> None:
        self._from_pubtypes(want)
        if not want:
            return
        units = self._candidates(want)
        if units is None:
            self.stats["method"] = "scan"
            units = [u.offset for u in self._all_units()]
        elif self.stats["method"] is None:
            self.stats["method"] = "filtered"
        deadline = t0 + self.budget
        dies = 0
        match = want | (set(KNOWN_STRUCTS) - set(self._layouts))
        for off in units:
            try:
                cu = self._cu(off)
                self.stats["units"] += 1
                for die in cu.get_top_DIE().iter_children():
                    dies += 1
                    name, defn = _definition(die, match)
                    if defn is not None and name is not None:
                        self._layouts[name] = build_layout(defn)
                        want.discard(name)
                        match.discard(name)
                        if not want:
                            break
                    if dies % 256 == 0 and (time.monotonic() > deadline or dies > MAX_DIES):
                        break
            except _ERRORS:
                continue                       # one unreadable unit: try the next
            if not want or time.monotonic() > deadline or dies > MAX_DIES:
                break
        self.stats["dies"] += dies
        if want and (time.monotonic() > deadline or dies > MAX_DIES):
            self._warn(f"DWARF: gave up looking for struct {', '.join(sorted(want))} after "
                       f"{self.budget:g} s (set {BUDGET_ENV} for a longer search)")

    def _from_pubtypes(self, want: Set[str]) -> None:
        if ".debug_pubtypes" not in self._secs:
            return
        try:
            lut = self._dw.get_pubtypes()
        except _ERRORS:
            return
        if lut is None:
            return
        for name in sorted(want):
            entry = lut.get(name)
            if entry is None:
                continue
            try:
                die = self._dw.get_DIE_from_lut_entry(entry)
            except _ERRORS:
                continue
            if _is_definition(die, {name}):
                self._layouts[name] = build_layout(die)
                want.discard(name)
                self.stats["method"] = "pubtypes"

    def _all_units(self) -> List[_Unit]:
        """Unit headers of ``.debug_info`` read from the raw bytes."""
        if self._units is not None:
            return self._units
        units: List[_Unit] = []
        sec = self._secs.get(".debug_info")
        if self._mm is not None and sec is not None and not sec[2] & SHF_COMPRESSED:
            start, size = sec[0], sec[1]
            pos, end = start, start + size
            while pos + 11 <= end:
                length = int.from_bytes(self._mm[pos:pos + 4], self._order)
                hdr, osize = 4, 4
                if length == 0xFFFFFFFF:
                    length = int.from_bytes(self._mm[pos + 4:pos + 12], self._order)
                    hdr, osize = 12, 8
                version = int.from_bytes(self._mm[pos + hdr:pos + hdr + 2], self._order)
                nxt = pos + hdr + length
                if length == 0 or nxt > end:
                    break
                units.append(_Unit(pos - start, nxt - start, version, osize))
                pos = nxt
        else:
            for cu in self._dw.iter_CUs():
                units.append(_Unit(cu.cu_offset, cu.cu_offset + cu.size,
                                   cu["version"], 8 if cu.dwarf_format() == 64 else 4))
        self._units = units
        return units

    def _candidates(self, want: Set[str]) -> Optional[List[int]]:
        """Offsets of the units that can name one of ``want``; None when that
        cannot be decided from the raw bytes (then every unit is searched)."""
        info, strs = self._secs.get(".debug_info"), self._secs.get(".debug_str")
        if self._mm is None or info is None or self._relocated:
            return None
        if any(s[2] & SHF_COMPRESSED for s in self._secs.values()):
            return None
        units = self._all_units()
        if not units:
            return None
        starts = [u.offset for u in units]
        osizes = sorted({u.offset_size for u in units})
        found: Set[int] = set()
        for name in want:
            raw = name.encode() + b"\0"
            patterns = [raw]                           # DW_FORM_string
            if strs is not None:
                offs = self._string_offsets(strs, raw)
                if offs is None:
                    return None
                strp = [o.to_bytes(n, self._order) for o in offs for n in osizes]
                patterns += strp
                stro = self._secs.get(".debug_str_offsets")
                if stro is not None and strp:
                    found |= self._str_offsets_units(stro, strp, units)
            for pat in patterns:
                found |= self._units_with(info, pat, starts, units)
        return sorted(found)

    def _string_offsets(self, sec: Tuple[int, int, int], raw: bytes) -> Optional[List[int]]:
        """``.debug_str`` offsets holding the string ``raw``: standalone copies,
        else (tail-merged strings) every suffix match; None if too many."""
        assert self._mm is not None
        start, end = sec[0], sec[0] + sec[1]
        whole: List[int] = []
        tails: List[int] = []
        pos = self._mm.find(raw, start, end)
        while pos >= 0:
            (whole if pos == start or self._mm[pos - 1] == 0 else tails).append(pos - start)
            if len(whole) + len(tails) > 4 * MAX_STR_PATTERNS:
                break
            pos = self._mm.find(raw, pos + 1, end)
        offs = whole or tails
        return offs if len(offs) <= MAX_STR_PATTERNS else None

    def _units_with(self, sec: Tuple[int, int, int], pattern: bytes, starts: List[int],
                    units: List[_Unit]) -> Set[int]:
        """Units whose bytes contain ``pattern`` (one find per unit at most)."""
        assert self._mm is not None
        out: Set[int] = set()
        base, end = sec[0], sec[0] + sec[1]
        pos = self._mm.find(pattern, base, end)
        while pos >= 0:
            i = bisect.bisect_right(starts, pos - base) - 1
            if i < 0:
                break
            out.add(units[i].offset)
            pos = self._mm.find(pattern, base + max(units[i].end, pos - base + 1), end)
        return out

    def _str_offsets_units(self, sec: Tuple[int, int, int], patterns: List[bytes],
                           units: List[_Unit]) -> Set[int]:
        """DWARF 5 units whose ``.debug_str_offsets`` contribution holds one of
        ``patterns`` (names in ``DW_FORM_strx*``)."""
        assert self._mm is not None
        hits: List[int] = []
        base, end = sec[0], sec[0] + sec[1]
        for pat in patterns:
            pos = self._mm.find(pat, base, end)
            while pos >= 0 and len(hits) < 100_000:
                hits.append(pos - base)
                pos = self._mm.find(pat, pos + 1, end)
        if not hits:
            return set()
        bases = self._str_offsets_bases(units)
        keys = sorted(bases)
        out: Set[int] = set()
        for h in hits:
            i = bisect.bisect_right(keys, h) - 1
            if i >= 0:
                out.update(bases[keys[i]])
        return out

    def _str_offsets_bases(self, units: List[_Unit]) -> Dict[int, List[int]]:
        """``DW_AT_str_offsets_base`` -> units using it (DWARF 5 units only)."""
        if self._str_bases is None:
            bases: Dict[int, List[int]] = {}
            for u in units:
                if u.version < 5:
                    continue
                try:
                    top = self._cu(u.offset).get_top_DIE()
                except _ERRORS:
                    continue
                b = _int_attr(top, "DW_AT_str_offsets_base")
                if b is not None:
                    bases.setdefault(b, []).append(u.offset)
            self._str_bases = bases
        return self._str_bases


def _env_budget() -> float:
    try:
        value = float(os.environ.get(BUDGET_ENV, DEFAULT_BUDGET))
    except ValueError:
        return DEFAULT_BUDGET
    return value if value > 0 else DEFAULT_BUDGET


_cache: Dict[Tuple[str, int, int], KernelDwarf] = {}
_cache_lock = threading.Lock()


def load(path: str) -> Optional[KernelDwarf]:
    """The (cached) DWARF reader of a kernel file, or None if unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_size)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is None:
            hit = _cache[key] = KernelDwarf(path)
        return hit


def for_kvm(kvm: Any) -> Optional[KernelDwarf]:
    """The DWARF reader of the kernel a Kvm was opened with, if any."""
    path = kernel_path(kvm)
    return load(path) if path else None


def struct_layout(kvm: Any, name: str) -> Optional[Layout]:
    """``struct name`` from the dump's kernel DWARF, or None; search warnings
    go to ``kvm.warnings``."""
    return struct_layouts(kvm, [name])[name]


def struct_layouts(kvm: Any, names: Iterable[str]) -> Dict[str, Optional[Layout]]:
    names = list(names)
    kd = for_kvm(kvm)
    if kd is None:
        return dict.fromkeys(names)
    out = kd.layouts(names)
    for message in kd.warnings:
        warn(kvm, message)
    return out
