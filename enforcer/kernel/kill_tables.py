"""The tables of the in-kernel kill (bpf/enforce.c), built from residues. Pure: no kernel.

Conjuncts (enforcer.kernel.residue.Conjunct, per rule) are interned into at most 64 slots;
path sets get one bit each (at most 64); the LPM trie holds one entry per path atom, whose
value is precomputed so that the longest matching key alone tells every path set the path
is in: the sets of all atoms that are prefixes of the key, plus, for `fd.directory`
atoms, the sets that match only when no '/' follows the key.

For connects, port sets and address sets get one bit each too (at most 64 of each): an
array indexed by port holds the bits of the port sets the port is in, and a second LPM
trie, keyed by the IP version then the address, holds one entry per network whose value
is the bits of every address set with a network containing it (so the longest match
alone answers).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from enforcer.kernel.residue import (
    ALL_RESULTS,
    NAMED_ERRNOS,
    AddrSet,
    Conjunct,
    PathSet,
    PortSet,
    errno_bit,
)
from enforcer.resources import bpf_dir

MAX_CONJ = 64
MAX_PATH_SETS = 64
MAX_NET_SETS = 64
MAX_DEPS = 16
MAX_TEMPLATES = 4096
PATH_LEN = 256
TYPE_BITS = {"open": 1, "openat": 2, "openat2": 4, "creat": 8, "connect": 16,
             "sendto": 32, "sendmsg": 64}


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
    ports_all: int = 0
    ports_none: int = 0
    addrs_all: int = 0
    addrs_none: int = 0
    uses_net: int = 0


def addr_key(net: str) -> tuple[int, bytes]:
    """(prefix length in bits, key bytes) of a network in the address trie: the IP
    version, then the address."""
    n = ipaddress.ip_network(net)
    return 8 + n.prefixlen, bytes([n.version]) + n.network_address.packed


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
    port_sets: dict[PortSet, int] = field(default_factory=dict)
    addr_sets: dict[AddrSet, int] = field(default_factory=dict)

    def rule_id(self, name: str) -> int:
        return self.rule_names.index(name)

    def slot(self, rule: int, conj: Conjunct) -> tuple[int, bool]:
        """(slot index, whether it is new) of a rule's conjunct; TableFull when full."""
        key = (rule, conj)
        found = self.slots.get(key)
        if found is not None:
            return found, False
        if len(self.rows) >= MAX_CONJ:
            raise TableFull("the in-kernel kill has no room for more residues")
        bits_all = sum(1 << self._path_bit(s) for s in conj.paths_all)
        bits_none = sum(1 << self._path_bit(s) for s in conj.paths_none)
        ports = [sum(1 << self._bit(self.port_sets, s, "port") for s in sets)
                 for sets in (conj.ports_all, conj.ports_none)]
        addrs = [sum(1 << self._bit(self.addr_sets, s, "address") for s in sets)
                 for sets in (conj.addrs_all, conj.addrs_none)]
        for kind, text in {a for s in conj.paths_all | conj.paths_none for a in s}:
            if len(atom_key(kind, text)) >= PATH_LEN:
                raise TableFull(f"path {text!r} is too long for the kernel's table")
        row = ConjRow(conj.classes, bits_all, bits_none,
                      sum(TYPE_BITS[t] for t in conj.types), conj.results,
                      int(conj.uses_path), rule, ports[0], ports[1], addrs[0], addrs[1],
                      int(conj.uses_net))
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

    @staticmethod
    def _bit(sets: dict, s: object, what: str) -> int:
        bit = sets.get(s)
        if bit is None:
            if len(sets) >= MAX_NET_SETS:
                raise TableFull(f"the in-kernel kill has no room for more {what} sets")
            bit = sets[s] = len(sets)
        return bit

    def port_bits(self) -> dict[int, int]:
        """{port: bits of the port sets it is in}, for every port in some set."""
        out: dict[int, int] = {}
        for ranges, bit in self.port_sets.items():
            for lo, hi in ranges:
                for port in range(lo, hi + 1):
                    out[port] = out.get(port, 0) | 1 << bit
        return out

    def addr_entries(self) -> dict[tuple[int, bytes], int]:
        """{(prefix length, key bytes): bits of the address sets containing that network}."""
        nets: dict[str, int] = {}
        for s, bit in self.addr_sets.items():
            for net in s:
                nets[net] = nets.get(net, 0) | 1 << bit
        parsed = {net: ipaddress.ip_network(net) for net in nets}
        out: dict[tuple[int, bytes], int] = {}
        for net, n in parsed.items():
            bits = 0
            for other, o in parsed.items():
                if o.version == n.version and n.subnet_of(o):  # type: ignore[arg-type]
                    bits |= nets[other]
            out[addr_key(net)] = bits
        return out

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
           stamp_entries: int = 262144, types: Iterable[str] | None = None) -> str:
    """The C text bcc compiles for bpf/enforce.c, attached to the syscalls in `types`
    (None: all it knows)."""
    wanted = set(TYPE_BITS) if types is None else set(types)
    values = {
        **{f"WANT_{name.upper()}_VALUE": str(int(name in wanted)) for name in TYPE_BITS},
        "MAX_DEPS_VALUE": str(MAX_DEPS),
        "AGENT_TGID_VALUE": str(int(agent_tgid)),
        "KILL_ENTRIES": str(kill_entries),
        "PATH_ENTRIES": str(path_entries),
        "STAMP_ENTRIES": str(stamp_entries),
        "MAX_TEMPLATES_VALUE": str(MAX_TEMPLATES),
        "ALL_RESULTS_VALUE": str(ALL_RESULTS),
        "RESULT_CASES": " ".join(f"case {e}: return {errno_bit(e)}U;" for e in NAMED_ERRNOS),
    }
    text = (bpf_dir() / "enforce.c").read_text()
    for key in sorted(values, key=len, reverse=True):
        text = text.replace(key, values[key])
    return text
