"""Each process's socket and pipe descriptors, kept from the kernel's records (socket,
socketpair, pipe, pipe2, accept, bind, connect, dup*, fcntl, close, close_range, fork,
exec, exit), as Falco's fd table is: fd.type, fd.name and the tuple of a descriptor are
known when a rule reads them, even when the process is gone by then (the reverse shell
that dups a connection onto stdin and exits at once). These syscalls are always
attached; when no rule asks for one, the kernel sends only what changes this table
(enforcer.sources.probe.fd_state).

The kernel keeps the keys (tgid << 32 | fd) of the descriptors held here, so that it
drops the closes of all others. Most of them it keeps itself; what only userspace knows
(a fork's copy, exec closing close-on-exec descriptors, a process's exit, close_range)
is pushed to it through `keys` (FdKeys).

Descriptors made before the agent started, files, eventfds and the rest are not held here:
the live /proc lookup (enforcer.state.sockets) answers for them, while the process lives.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any, Protocol

from enforcer.state import sockets

SOCK_CLOEXEC = 0o2000000
O_CLOEXEC = 0o2000000
F_DUPFD, F_SETFD, F_DUPFD_CLOEXEC = 0, 2, 1030
FD_CLOEXEC = 1
CLOSE_RANGE_CLOEXEC = 4
EINPROGRESS = 115
FORK_COPY_FDS = 64  # bpf/events.c: numbers whose keys the kernel copies and drops itself

_FAMILY = {1: "unix", 2: "ipv4", 10: "ipv6", 16: "netlink"}
_PROTO = {1: "tcp", 2: "udp", 3: "raw", 5: "tcp"}  # by socket type; SEQPACKET as Falco


@dataclass(frozen=True, slots=True)
class FdEntry:
    """One socket or pipe descriptor as the records described it."""

    type: str  # Falco's fd.type: ipv4, ipv6, unix, netlink, pipe, ...
    l4proto: str | None = None
    local: tuple[str, int] | None = None
    remote: tuple[str, int] | None = None
    unix_path: str | None = None
    server: bool = False  # accepted: this process is the server end (fd.sip is local)
    cloexec: bool = False

    def socket_info(self) -> sockets.SocketInfo:
        """The entry as the /proc lookup would have answered."""
        family = {"ipv4": 4, "ipv6": 6}.get(self.type, 0)
        lip, lport = self.local or (None, None)
        rip, rport = self.remote or (None, None)
        return sockets.SocketInfo(self.l4proto or self.type, family, lip, lport, rip, rport)

    def complete(self) -> bool:
        """Whether both ends are known (an IP socket), so /proc has nothing to add."""
        if self.type not in ("ipv4", "ipv6"):
            return True
        return (self.local is not None and self.remote is not None
                and not _unspecified(self.local[0]))


def _unspecified(ip: str) -> bool:
    return ip in ("0.0.0.0", "::")


class FdKeys(Protocol):
    """The kernel's set of tracked descriptors (fd_tracked in bpf/events.c)."""

    def add(self, keys: list[int]) -> None: ...

    def remove(self, keys: list[int]) -> None: ...

    def synced(self, pid: int) -> None:
        """The keys of a new process's copied descriptors are in: the kernel may drop its
        closes of untracked descriptors again (fd_unsynced in bpf/events.c)."""


def key(pid: int, fd: int) -> int:
    """The kernel's key of a descriptor."""
    return (pid << 32) | (fd & 0xFFFFFFFF)


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def _local_tuple(head: int, lo: int, hi: int) -> tuple[str, int] | None:
    """The local end the connect handler joined from sock:inet_sock_set_state."""
    if not head >> 32 & 1:
        return None
    family, port = head & 0xFFFF, head >> 16 & 0xFFFF
    if family == 2:
        return str(ipaddress.IPv4Address(lo.to_bytes(8, "little")[:4])), port
    ip6 = ipaddress.IPv6Address(lo.to_bytes(8, "little") + hi.to_bytes(8, "little"))
    return (str(ip6.ipv4_mapped) if ip6.ipv4_mapped else str(ip6)), port


class FdTable:
    """pid -> {fd -> FdEntry}, for the processes that hold sockets or pipes made while the
    agent ran."""

    def __init__(self, proc_root: str = "/proc", keys: FdKeys | None = None,
                 max_processes: int = 32768):
        self.proc_root = proc_root
        self.keys = keys
        # bounded: an exit lost with a full ring buffer would otherwise keep its entries
        # forever; the oldest process goes first (its sockets fall back to /proc)
        self.max_processes = max_processes
        self._fds: dict[int, dict[int, FdEntry]] = {}
        # keys left in the kernel at exec (on_exec), pulled when the process goes
        self._orphans: dict[int, set[int]] = {}

    def get(self, pid: int, fd: int) -> FdEntry | None:
        """The entry of a descriptor, if this table holds it."""
        fds = self._fds.get(pid)
        return fds.get(fd) if fds else None

    def all_keys(self) -> list[int]:
        """Every descriptor held, as kernel keys (to seed a newly loaded probe)."""
        return [key(pid, fd) for pid, fds in self._fds.items() for fd in fds]

    def __len__(self) -> int:
        return sum(len(fds) for fds in self._fds.values())

    # -- process lifecycle ---------------------------------------------------------------
    def on_fork(self, parent: int, child: int) -> None:
        """The child starts with copies of its parent's descriptors. Until the kernel
        holds their keys, it sends every close, dup and fcntl of the child; those that
        were in the ring before the keys went in are applied after this, in order."""
        fds = self._fds.get(parent)
        if fds and child != parent:
            if len(self._fds) >= self.max_processes:
                self._drop(next(iter(self._fds)))
            self._fds[child] = dict(fds)
            self._push([key(child, fd) for fd in fds])
        if self.keys is not None and child != parent:
            self.keys.synced(child)

    def on_thread(self, tid: int) -> None:
        """A task fork made turned out to be a thread: it shares its process's table."""
        self._drop(tid)

    def on_exec(self, pid: int) -> None:
        """exec closes the close-on-exec descriptors. Their kernel keys stay until the
        process exits: pulled here, late, a key could belong to a socket or pipe the new
        image has made under the same number since, whose closes would then be lost. A
        key left costs at most a record the table ignores."""
        fds = self._fds.get(pid)
        if not fds:
            return
        gone = [fd for fd, ent in fds.items() if ent.cloexec]
        for fd in gone:
            del fds[fd]
        if gone and self.keys is not None:
            self._orphans.setdefault(pid, set()).update(gone)

    def on_exit(self, pid: int) -> None:
        """The process is gone, and its descriptors with it."""
        self._drop(pid)

    def _drop(self, pid: int) -> None:
        fds = self._fds.pop(pid, None)
        left = self._orphans.pop(pid, set())
        if fds or left:
            self._pull([key(pid, fd) for fd in set(fds or ()) | left])

    def _push(self, keys: list[int]) -> None:
        if self.keys is not None and keys:
            self.keys.add(keys)

    def _pull(self, keys: list[int]) -> None:
        if self.keys is not None and keys:
            self.keys.remove(keys)

    def _set(self, pid: int, fd: int, entry: FdEntry | None) -> None:
        if entry is None:
            fds = self._fds.get(pid)
            if fds is not None:
                fds.pop(fd, None)
                if not fds:
                    del self._fds[pid]
            return
        fds = self._fds.get(pid)
        if fds is None:
            if len(self._fds) >= self.max_processes:
                self._drop(next(iter(self._fds)))
            fds = self._fds[pid] = {}
        fds[fd] = entry

    # -- records -------------------------------------------------------------------------
    def apply(self, f: dict[str, Any]) -> FdEntry | None:
        """Apply one record of sc.FD_STATE; returns the entry of the descriptor the event
        is about, as a rule must see it (the new socket's, the connected one's, the
        duplicated one's; a closed descriptor's as it was)."""
        etype = f["evt.type"]
        pid = f["proc.pid"]
        ret = f.get("evt.rawres", -1)
        ints = f.get("_ints", {})
        slots = f.get("_slots", (0,) * 6)
        full = bool(slots[5]) if etype not in ("connect", "bind") else False
        if etype == "close":
            fd = _s32(ints.get("fd", -1))
            old = self.get(pid, fd)
            self._set(pid, fd, None)
            if old is not None:  # a fork's copy may have been pushed after this close
                self._pull([key(pid, fd)])
            return old
        if etype == "close_range":
            return self._close_range(pid, ret, ints)
        if etype in ("socket", "accept", "accept4"):
            if ret < 0:
                return None
            entry = (self._socket(ints) if etype == "socket"
                     else self._accepted(pid, f, ints, etype == "accept4"))
            self._set(pid, ret, None if full or entry is None else entry)
            return entry
        if etype == "socketpair":
            if ret != 0:
                return None
            entry = self._socket(ints)
            for fd in (slots[4] & 0xFFFFFFFF, slots[4] >> 32 & 0xFFFFFFFF):
                self._set(pid, _s32(fd), None if full else entry)
            return entry
        if etype in ("pipe", "pipe2"):
            if ret != 0:
                return None
            # Falco's pipe: type `pipe` (SCAP_FD_FIFO), an empty name
            flags = ints.get("flags", 0) if etype == "pipe2" else 0
            entry = FdEntry("pipe", cloexec=bool(flags & O_CLOEXEC))
            for fd in (slots[4] & 0xFFFFFFFF, slots[4] >> 32 & 0xFFFFFFFF):
                self._set(pid, _s32(fd), None if full else entry)
            return entry
        if etype in ("bind", "connect"):
            return self._named(pid, f, ints, slots, etype, ret)
        if etype in ("dup", "dup2", "dup3", "fcntl"):
            return self._dup(pid, f, ints, ret, full)
        return None

    def _close_range(self, pid: int, ret: int, ints: dict[str, int]) -> None:
        fds = self._fds.get(pid)
        if ret != 0 or not fds:
            return None
        lo, hi = ints.get("fd", 0) & 0xFFFFFFFF, ints.get("max_fd", 0) & 0xFFFFFFFF
        hit = [fd for fd in fds if lo <= fd <= hi]
        if ints.get("flags", 0) & CLOSE_RANGE_CLOEXEC:
            for fd in hit:
                fds[fd] = replace(fds[fd], cloexec=True)
            return None
        for fd in hit:
            del fds[fd]
        # the kernel dropped the keys below FORK_COPY_FDS at the call (fd_untrack_range)
        self._pull([key(pid, fd) for fd in hit if fd >= FORK_COPY_FDS])
        return None

    @staticmethod
    def _socket(ints: dict[str, int]) -> FdEntry:
        family = ints.get("family", 0)
        kind = ints.get("type", 0)
        ftype = _FAMILY.get(family, "socket")
        proto = _PROTO.get(kind & 0xF) if ftype in ("ipv4", "ipv6") else None
        if proto == "raw" or (proto is None and ftype in ("ipv4", "ipv6")):
            proto = "raw"
        return FdEntry(ftype, proto, cloexec=bool(kind & SOCK_CLOEXEC))

    def _accepted(self, pid: int, f: dict[str, Any], ints: dict[str, int],
                  four: bool) -> FdEntry | None:
        listener = self.get(pid, _s32(ints.get("fd", -1)))
        sa = f.get("_sockaddr")
        remote = (sa["ip"], sa["port"]) if sa and "ip" in sa else None
        local = _local_tuple(*f.get("_local", (0, 0, 0)))
        cloexec = four and bool(ints.get("flags", 0) & SOCK_CLOEXEC)
        if listener is not None:
            return replace(listener, remote=remote, local=local or listener.local,
                           server=True, cloexec=cloexec)
        if sa and sa.get("family") in ("ipv4", "ipv6"):
            return FdEntry(sa["family"], "tcp", local=local, remote=remote, server=True,
                           cloexec=cloexec)
        return None  # a listener from before the agent, and no peer address: /proc

    def _named(self, pid: int, f: dict[str, Any], ints: dict[str, int], slots: Any,
               etype: str, ret: int) -> FdEntry | None:
        fd = _s32(ints.get("fd", -1))
        entry = self.get(pid, fd)
        if entry is None or not (ret == 0 or (etype == "connect" and ret == -EINPROGRESS)):
            return entry
        sa = f.get("_sockaddr")
        if sa and sa.get("family") == "unix":
            entry = replace(entry, unix_path=sa.get("path"))
        elif sa and "ip" in sa:
            end = (sa["ip"], sa["port"])
            if etype == "bind":
                entry = replace(entry, local=end)
            else:
                local = _local_tuple(slots[3], slots[4], slots[5]) or entry.local
                entry = replace(entry, remote=end, local=local, server=False)
        if etype == "connect" and not entry.complete():
            # the kernel could not read the socket (no BTF: a non-blocking or UDP
            # connect); the process is usually still there to ask
            info = sockets.fd_socket(self.proc_root, pid, fd)
            if info is not None and info.lport:
                entry = replace(entry, local=(info.lip, info.lport))
        self._set(pid, fd, entry)
        return entry

    def _dup(self, pid: int, f: dict[str, Any], ints: dict[str, int], ret: int,
             full: bool) -> FdEntry | None:
        etype = f["evt.type"]
        old = _s32(ints.get("fd", ints.get("fildes", ints.get("oldfd", -1))))
        entry = self.get(pid, old)
        if etype == "fcntl":
            cmd = ints.get("cmd", -1)
            if cmd == F_SETFD and ret == 0 and entry is not None:
                entry = replace(entry, cloexec=bool(ints.get("arg", 0) & FD_CLOEXEC))
                self._set(pid, old, entry)
                return entry
            if cmd not in (F_DUPFD, F_DUPFD_CLOEXEC):
                return entry
            cloexec = cmd == F_DUPFD_CLOEXEC
        else:
            cloexec = etype == "dup3" and bool(ints.get("flags", 0) & O_CLOEXEC)
        if ret < 0 or ret == old:
            return entry
        # dup2/dup3 close what the new number held; the new one shares the old's socket
        made = None if entry is None or full else replace(entry, cloexec=cloexec)
        replaced = self.get(pid, ret)
        self._set(pid, ret, made)
        if made is not None:  # the kernel did not track it in a child not synced yet
            self._push([key(pid, ret)])
        elif replaced is not None:
            self._pull([key(pid, ret)])
        return entry
