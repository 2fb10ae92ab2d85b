"""Kernel side of the in-kernel kill (bpf/enforce.c): load it (compiled by bcc in a
short-lived child, see enforcer.adapters.bcc_probe.load_programs), fill its maps, read its
kill records. The only place its maps are touched."""

from __future__ import annotations

import ctypes
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from enforcer.adapters.bcc_probe import load_programs, require_privileges

PATH_LEN = 256


@dataclass(frozen=True)
class KillRecord:
    """One kill the kernel made."""

    ts_mono: int
    tgid: int
    tid: int
    rule: int
    conj: int
    syscall: int
    ret: int
    at_exit: bool
    comm: str
    path: str
    address: str = ""  # a connect's remote end, "ip:port" or "[ip6]:port"


class _Rec(ctypes.Structure):
    _fields_ = [("ts", ctypes.c_uint64), ("tgid", ctypes.c_uint32), ("tid", ctypes.c_uint32),
                ("rule", ctypes.c_uint32), ("conj", ctypes.c_uint32),
                ("type", ctypes.c_uint32), ("ret", ctypes.c_int32),
                ("at_exit", ctypes.c_uint32), ("port", ctypes.c_uint32),
                ("family", ctypes.c_uint32), ("addr", ctypes.c_uint8 * 16),
                ("comm", ctypes.c_char * 16), ("path", ctypes.c_char * PATH_LEN)]


def _address(r: _Rec) -> str:
    raw = bytes(r.addr)
    if r.family == 4:
        return f"{ipaddress.IPv4Address(raw[:4])}:{r.port}"
    if r.family == 6:
        return f"[{ipaddress.IPv6Address(raw)}]:{r.port}"
    return ""


class BccEnforce:
    """The compiled and attached enforce.c."""

    def __init__(self, text: str, on_kill: Callable[[KillRecord], None]):
        require_privileges()
        self.bpf, self.warnings = load_programs(text, "the in-kernel kill program")

        def _cb(_ctx: object, data: int, size: int) -> int:
            if size >= ctypes.sizeof(_Rec):
                r = _Rec.from_address(data)
                on_kill(KillRecord(r.ts, r.tgid, r.tid, r.rule, r.conj, r.type, r.ret,
                                   bool(r.at_exit), r.comm.decode(errors="replace"),
                                   r.path.decode(errors="replace"), _address(r)))
            return 0

        self._cb = _cb
        self.bpf.open_ring_buffer(b"kills", _cb)
        self._kill_map = self.bpf[b"kill_map"]
        self._stamps = self.bpf[b"stamps"]

    def set_conj(self, index: int, classes: int, paths_all: int, paths_none: int, types: int,
                 results: int, uses_path: int, rule: int, ports_all: int = 0,
                 ports_none: int = 0, addrs_all: int = 0, addrs_none: int = 0,
                 uses_net: int = 0) -> None:
        table = self.bpf[b"conjs"]
        v = table.Leaf()
        v.classes, v.paths_all, v.paths_none = classes, paths_all, paths_none
        v.types, v.results, v.uses_path, v.rule = types, results, uses_path, rule
        v.ports_all, v.ports_none, v.addrs_all, v.addrs_none = (ports_all, ports_none,
                                                                addrs_all, addrs_none)
        v.uses_net = uses_net
        table[ctypes.c_int(index)] = v

    def set_ports(self, bits: dict[int, int]) -> None:
        """Port-set bits by port (one batch when the kernel and bcc allow it)."""
        table = self.bpf[b"port_bits"]
        items = sorted(bits.items())
        if len(items) > 16 and hasattr(table, "items_update_batch"):
            keys = (table.Key * len(items))(*(table.Key(p) for p, _ in items))
            values = (table.Leaf * len(items))(*(table.Leaf(b) for _, b in items))
            try:
                table.items_update_batch(keys, values)
                return
            except Exception:  # noqa: BLE001 - an older kernel: one at a time below
                pass
        for port, b in items:
            table[ctypes.c_int(port)] = ctypes.c_uint64(b)

    def set_addr(self, prefixlen: int, key: bytes, bits: int) -> None:
        table = self.bpf[b"addrs"]
        k = table.Key()
        k.prefixlen = prefixlen
        ctypes.memmove(ctypes.addressof(k) + type(k).data.offset, key, len(key))
        table[k] = ctypes.c_uint64(bits)

    def set_path(self, key: bytes, always: int, noslash: int) -> None:
        table = self.bpf[b"paths"]
        k = table.Key()
        k.prefixlen = len(key) * 8
        ctypes.memmove(ctypes.addressof(k) + type(k).data.offset, key, len(key))
        v = table.Leaf()
        v.always, v.noslash, v.keylen = always, noslash, len(key)
        table[k] = v

    def put(self, tgid: int, conj: int, uid: int, gid: int, cgroup: int, comm: bytes,
            deps: list[tuple[int, int]]) -> None:
        v = self._kill_map.Leaf()
        v.conj, v.uid, v.gid, v.cgroup, v.ndeps = conj, uid, gid, cgroup, len(deps)
        ctypes.memmove(ctypes.addressof(v) + type(v).comm.offset, comm[:15], len(comm[:15]))
        for i, (pid, stamp) in enumerate(deps):
            v.dep_pid[i] = pid
            v.dep_stamp[i] = stamp
        self._kill_map[ctypes.c_uint32(tgid)] = v

    def delete(self, tgid: int) -> None:
        try:
            del self._kill_map[ctypes.c_uint32(tgid)]
        except KeyError:
            pass

    def set_template(self, tmpl: int, default: int, comms: dict[str, int],
                     child_default: int = -1, child_comms: dict[str, int] | None = None
                     ) -> None:
        """A template: conjuncts by the child's comm, and the child's own template (-1:
        none) by its comm. Entries first, defaults last: a half-written template arms
        less, never more."""
        table = self.bpf[b"tmpl_comm"]
        for comm, bits in comms.items():
            table[self._tkey(table, tmpl, comm)] = ctypes.c_uint64(bits)
        table = self.bpf[b"tmpl_child"]
        for comm, child in (child_comms or {}).items():
            table[self._tkey(table, tmpl, comm)] = ctypes.c_uint32(child + 1)
        self.bpf[b"tmpl_child_default"][ctypes.c_int(tmpl)] = ctypes.c_uint32(child_default + 1)
        self.bpf[b"tmpl_default"][ctypes.c_int(tmpl)] = ctypes.c_uint64(default)

    @staticmethod
    def _tkey(table: object, tmpl: int, comm: str) -> object:
        k = table.Key()  # type: ignore[attr-defined]
        k.tmpl = tmpl
        raw = comm.encode()[:15]
        ctypes.memmove(ctypes.addressof(k) + type(k).comm.offset, raw, len(raw))
        return k

    def set_comm_prefixes(self, prefixes: Iterable[str]) -> None:
        """The name prefixes the rules check: a comm that starts with one never takes a
        template's default (bpf/enforce.c, arm_child)."""
        table = self.bpf[b"comm_prefixes"]
        for prefix in prefixes:
            raw = prefix.encode()[:15]
            k = table.Key()  # type: ignore[attr-defined]
            k.prefixlen = 8 * len(raw)
            ctypes.memmove(ctypes.addressof(k) + type(k).data.offset, raw, len(raw))
            table[k] = ctypes.c_uint32(1)

    def put_parent(self, tgid: int, tmpl: int, uid: int, gid: int, cgroup: int,
                   deps: list[tuple[int, int]]) -> None:
        table = self.bpf[b"parents"]
        v = table.Leaf()
        v.tmpl, v.uid, v.gid, v.cgroup, v.ndeps = tmpl, uid, gid, cgroup, len(deps)
        for i, (pid, stamp) in enumerate(deps):
            v.dep_pid[i] = pid
            v.dep_stamp[i] = stamp
        table[ctypes.c_uint32(tgid)] = v

    def delete_parent(self, tgid: int) -> None:
        try:
            del self.bpf[b"parents"][ctypes.c_uint32(tgid)]
        except KeyError:
            pass

    def switch_off(self) -> None:
        """No more kills from the kernel, whatever the maps say."""
        self.bpf[b"switched_off"][ctypes.c_int(0)] = ctypes.c_uint32(1)

    def armed(self) -> list[int]:
        return [int(k.value) for k in self._kill_map.keys()]

    def stamp(self, pid: int) -> tuple[int, int]:
        """(stamp, ktime) the kernel holds for pid; (0, 0) when none."""
        try:
            v = self._stamps[ctypes.c_uint32(pid)]
        except KeyError:
            return 0, 0
        return int(v.stamp), int(v.ktime)

    def killed_start(self, pid: int) -> int | None:
        """The start (ns since boot) of the process with this pid that the kernel killed
        last, or None when it killed none (of those it still remembers)."""
        try:
            return int(self.bpf[b"killed"][ctypes.c_uint32(pid)].value)
        except KeyError:
            return None

    def poll(self, timeout_ms: int = 0) -> None:
        self.bpf.ring_buffer_poll(timeout_ms)

    def stats(self) -> tuple[int, int, int]:
        """(kills, refusals because something changed since exec, lost kill records)."""
        table = self.bpf[b"kstats"]
        out = [0, 0, 0]
        for i in range(3):
            out[i] = sum(int(x) for x in table[ctypes.c_int(i)])
        return out[0], out[1], out[2]

    def close(self) -> None:
        self.bpf.cleanup()
