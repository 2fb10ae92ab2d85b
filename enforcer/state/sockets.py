"""What /proc says about a process's file descriptors and sockets, read only when a rule
asks (fd.type of a dup'ed descriptor, the local end of a connected socket, the protocol)."""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass

_TABLES = (("tcp", "tcp", 4), ("udp", "udp", 4), ("tcp6", "tcp", 6), ("udp6", "udp", 6),
           ("raw", "raw", 4), ("raw6", "raw", 6))


@dataclass(frozen=True)
class SocketInfo:
    """One socket as /proc/PID/net/* lists it."""

    l4proto: str  # tcp, udp, raw, unix
    family: int  # 4, 6, or 0 for unix
    lip: str | None = None
    lport: int | None = None
    rip: str | None = None
    rport: int | None = None


def fd_target(proc_root: str, pid: int, fd: int) -> str | None:
    """readlink of /proc/PID/fd/FD: a path, `socket:[INODE]`, `pipe:[...]`, ..."""
    try:
        return os.readlink(f"{proc_root}/{pid}/fd/{fd}")
    except OSError:
        return None


def _hex_ip(text: str, family: int) -> str:
    raw = bytes.fromhex(text)
    if family == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # four little-endian 32-bit words
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    ip6 = ipaddress.IPv6Address(words)
    return str(ip6.ipv4_mapped) if ip6.ipv4_mapped else str(ip6)


def socket_info(proc_root: str, pid: int, inode: int) -> SocketInfo | None:
    """Find a socket inode in the process's network namespace tables."""
    needle = str(inode)
    for table, proto, family in _TABLES:
        try:
            with open(f"{proc_root}/{pid}/net/{table}") as fh:
                next(fh, None)
                for line in fh:
                    parts = line.split()
                    if len(parts) > 9 and parts[9] == needle:
                        lip, lport = parts[1].split(":")
                        rip, rport = parts[2].split(":")
                        return SocketInfo(proto, family, _hex_ip(lip, family), int(lport, 16),
                                          _hex_ip(rip, family), int(rport, 16))
        except OSError:
            continue
    try:
        with open(f"{proc_root}/{pid}/net/unix") as fh:
            next(fh, None)
            for line in fh:
                parts = line.split()
                if len(parts) > 6 and parts[6] == needle:
                    return SocketInfo("unix", 0)
    except OSError:
        pass
    return None


def fd_socket(proc_root: str, pid: int, fd: int) -> SocketInfo | None:
    """The socket behind a descriptor, if it is one and the process is still there."""
    target = fd_target(proc_root, pid, fd)
    if not target or not target.startswith("socket:["):
        return None
    return socket_info(proc_root, pid, int(target[8:-1]))


def fd_type_of(proc_root: str, pid: int, fd: int) -> str | None:
    """Falco's fd.type of a live descriptor: file, directory, ipv4, ipv6, unix, pipe, ..."""
    target = fd_target(proc_root, pid, fd)
    if target is None:
        return None
    if target.startswith("socket:["):
        info = socket_info(proc_root, pid, int(target[8:-1]))
        if info is None:
            return None
        return {4: "ipv4", 6: "ipv6"}.get(info.family, "unix")
    if target.startswith("pipe:"):
        return "pipe"
    if target.startswith("anon_inode:"):
        kind = target[11:].strip("[]")
        return {"eventfd": "event", "signalfd": "signalfd", "eventpoll": "eventpoll",
                "inotify": "inotify", "timerfd": "timerfd", "bpf-map": "bpf",
                "bpf-prog": "bpf", "userfaultfd": "userfaultfd"}.get(kind, kind)
    if target.startswith("/memfd:"):
        return "memfd"
    try:
        mode = os.stat(f"{proc_root}/{pid}/fd/{fd}").st_mode  # the open file itself
    except OSError:
        return "file"
    return "directory" if stat.S_ISDIR(mode) else "file"
