"""The tables of the in-kernel kill (bpf/enforce.c), built from residues. Pure: no kernel.

Conjuncts (enforcer.rules.kernel_residue.Conjunct, per rule) are interned into at most 64 slots;
path sets get one bit each (at most 64); the LPM trie holds one entry per path atom, whose
value is precomputed so that the longest matching key alone tells every path set the path
is in: the sets of all atoms that are prefixes of the key, plus, for `fd.directory`
atoms, the sets that match only when no '/' follows the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from enforcer.resources import bpf_dir
from enforcer.rules.kernel_residue import Conjunct, PathSet

MAX_CONJ = 64
MAX_PATH_SETS = 64
MAX_DEPS = 16
MAX_TEMPLATES = 4096
PATH_LEN = 256
TYPE_BITS = {"open": 1, "openat": 2, "openat2": 4, "creat": 8}


class TableFull(Exception):
    """No room for one more conjunct or path set: the process stays userspace-only."""


@dataclass(frozen=True)
class ConjRow:
    """One row of the kernel's conjs array."""

    classes: int
    paths_all: int
    paths_none: int
    types: int
    results: int
    uses_path: int
    rule: int


def atom_key(kind: str, text: str) -> bytes:
    """The LPM key bytes of a path atom: exact paths end with NUL, directories with '/'."""
    if kind == "exact":
        return text.encode() + b"\0"
    if kind == "dir":
        return (text.rstrip("/") + "/").encode()
    return text.encode()


@dataclass
class KillTables:
    """Interned conjuncts and path sets, and the LPM entries they imply."""

    rule_names: list[str]
    slots: dict[tuple[int, Conjunct], int] = field(default_factory=dict)
    rows: list[ConjRow] = field(default_factory=list)
    path_sets: dict[PathSet, int] = field(default_factory=dict)

    def rule_id(self, name: str) -> int:
        return self.rule_names.index(name)

    def slot(self, rule: int, conj: Conjunct) -> tuple[int, bool]:
        """(slot index, whether it is new) of a rule's conjunct; TableFull when full."""
        key = (rule, conj)
        found = self.slots.get(key)
        if found is not None:
            return found, False
        bits_all = sum(1 << self._path_bit(s) for s in conj.paths_all)
        bits_none = sum(1 << self._path_bit(s) for s in conj.paths_none)
        if len(self.rows) >= MAX_CONJ:
            raise TableFull("the in-kernel kill has no room for more residues")
        for kind, text in {a for s in conj.paths_all | conj.paths_none for a in s}:
            if len(atom_key(kind, text)) >= PATH_LEN:
                raise TableFull(f"path {text!r} is too long for the kernel's table")
        row = ConjRow(conj.classes, bits_all, bits_none,
                      sum(TYPE_BITS[t] for t in conj.types), conj.results,
                      int(conj.uses_path), rule)
        self.rows.append(row)
        self.slots[key] = len(self.rows) - 1
        return len(self.rows) - 1, True

    def _path_bit(self, s: PathSet) -> int:
        bit = self.path_sets.get(s)
        if bit is None:
            if len(self.path_sets) >= MAX_PATH_SETS:
                raise TableFull("the in-kernel kill has no room for more path sets")
            bit = len(self.path_sets)
            self.path_sets[s] = bit
        return bit

    def lpm_entries(self) -> dict[bytes, tuple[int, int]]:
        """{key bytes: (always bits, bits that need no '/' after the key)}."""
        atoms: dict[bytes, list[tuple[str, str, int]]] = {}
        for s, bit in self.path_sets.items():
            for kind, text in s:
                atoms.setdefault(atom_key(kind, text), []).append((kind, text, bit))
        out: dict[bytes, tuple[int, int]] = {}
        for key in atoms:
            always = noslash = 0
            exact = key.endswith(b"\0")
            for akey, items in atoms.items():
                if not key.startswith(akey):
                    continue
                for kind, _text, bit in items:
                    if kind == "prefix" or (kind == "exact" and akey == key):
                        always |= 1 << bit
                    elif kind == "dir":
                        rest = key[len(akey):]
                        if exact:
                            name = rest[:-1]
                            if name and b"/" not in name:
                                always |= 1 << bit
                        elif b"/" not in rest:
                            noslash |= 1 << bit
            out[key] = (always, noslash)
        return out


def render(agent_tgid: int, kill_entries: int = 65536, path_entries: int = 1024,
           stamp_entries: int = 262144) -> str:
    """The C text bcc compiles for bpf/enforce.c."""
    values = {
        "MAX_DEPS_VALUE": str(MAX_DEPS),
        "AGENT_TGID_VALUE": str(int(agent_tgid)),
        "KILL_ENTRIES": str(kill_entries),
        "PATH_ENTRIES": str(path_entries),
        "STAMP_ENTRIES": str(stamp_entries),
        "MAX_TEMPLATES_VALUE": str(MAX_TEMPLATES),
    }
    text = (bpf_dir() / "enforce.c").read_text()
    for key in sorted(values, key=len, reverse=True):
        text = text.replace(key, values[key])
    return text
