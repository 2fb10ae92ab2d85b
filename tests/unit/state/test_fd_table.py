"""The fd table from decoded records: a socket's type and tuple as the kernel reported them,
with no /proc to ask (the process is gone), across dup, fork, exec and exit."""

from __future__ import annotations

import socket
import struct

from enforcer.sources import syscalls as sc
from enforcer.sources.decode import _P2, decode, pack
from enforcer.state.fd_table import FdTable, key

PID = 777
SOCK_CLOEXEC = 0o2000000


def _sin(ip: str, port: int) -> bytes:
    return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton(ip)


def _tuple(ip: str, port: int) -> tuple[int, int, int]:
    """The local end as connect_tuple()/accept_tuple() in bpf/events.c write it."""
    return (2 | port << 16 | 1 << 32, int.from_bytes(socket.inet_aton(ip), "little"), 0)


def rec(name: str, ret: int, ints: tuple[int, ...] = (), saddr: bytes = b"",
        local: tuple[int, int, int] | None = None, pid: int = PID) -> dict:
    raw = pack(code=sc.CODES[name], tgid=pid, ret=ret, ints=ints, saddr=saddr)
    if local is not None:
        raw = raw[:_P2] + struct.pack("<QQQ", *local) + raw[_P2 + 24:]
    return decode(raw)


class Keys:
    def __init__(self) -> None:
        self.keys: set[int] = set()
        self.removed: list[int] = []
        self.synced_pids: list[int] = []

    def add(self, keys: list[int]) -> None:
        self.keys.update(keys)

    def remove(self, keys: list[int]) -> None:
        self.keys.difference_update(keys)
        self.removed += keys

    def synced(self, pid: int) -> None:
        self.synced_pids.append(pid)


def table() -> FdTable:
    return FdTable(proc_root="/nonexistent", keys=Keys())


def test_connected_socket_has_both_ends_from_the_records() -> None:
    t = table()
    t.apply(rec("socket", 3, (socket.AF_INET, socket.SOCK_STREAM, 0)))
    entry = t.apply(rec("connect", 0, (3, 0, 16, *_tuple("10.0.0.5", 40000)),
                        saddr=_sin("10.0.0.9", 443)))
    assert entry is not None and entry.complete()
    assert (entry.type, entry.l4proto) == ("ipv4", "tcp")
    assert entry.local == ("10.0.0.5", 40000) and entry.remote == ("10.0.0.9", 443)
    # dup2 onto stdout: the same socket under 1
    assert t.apply(rec("dup2", 1, (3, 1))) == entry
    assert t.get(PID, 1) == entry


def test_accepted_socket_local_end_from_the_kernel_else_from_the_bind() -> None:
    t = table()
    t.apply(rec("socket", 3, (socket.AF_INET, socket.SOCK_STREAM, 0)))
    t.apply(rec("bind", 0, (3, 0, 16), saddr=_sin("0.0.0.0", 8080)))
    known = t.apply(rec("accept4", 4, (3, 0, 0, SOCK_CLOEXEC), saddr=_sin("10.1.1.1", 5555),
                        local=_tuple("10.0.0.5", 8080)))
    assert known is not None and known.server and known.cloexec
    assert known.local == ("10.0.0.5", 8080) and known.remote == ("10.1.1.1", 5555)
    bare = t.apply(rec("accept", 5, (3, 0, 0)))  # no address asked (busybox nc)
    assert bare is not None and bare.type == "ipv4" and bare.local == ("0.0.0.0", 8080)
    assert bare.remote is None and not bare.complete()


def test_close_dup_over_and_close_range_take_the_entries() -> None:
    t = table()
    t.apply(rec("socket", 3, (socket.AF_INET6, socket.SOCK_DGRAM, 0)))
    t.apply(rec("socket", 4, (socket.AF_UNIX, socket.SOCK_STREAM, 0)))
    assert t.get(PID, 3).l4proto == "udp" and t.get(PID, 4).type == "unix"  # type: ignore
    t.apply(rec("close", 0, (4,)))
    assert t.get(PID, 4) is None
    t.apply(rec("fcntl", 9, (3, 1030, 9)))
    assert t.get(PID, 9).cloexec  # type: ignore[union-attr]
    t.apply(rec("close_range", 0, (5, 20, 0)))
    assert t.get(PID, 9) is None and t.get(PID, 3) is not None
    t.apply(rec("dup2", 3, (3, 3)))  # onto itself: nothing changes
    assert t.get(PID, 3) is not None


def test_fork_copies_exec_closes_cloexec_exit_forgets() -> None:
    t = table()
    keys = t.keys
    assert isinstance(keys, Keys)
    t.apply(rec("socket", 3, (socket.AF_INET, socket.SOCK_STREAM | SOCK_CLOEXEC, 0)))
    t.apply(rec("socket", 4, (socket.AF_INET, socket.SOCK_STREAM, 0)))
    t.on_fork(PID, 900)
    assert keys.keys == {key(900, 3), key(900, 4)}  # the child's closes must cross
    t.on_exec(900)
    assert t.get(900, 3) is None and t.get(900, 4) is not None
    # its key stays until the exit: pulled late, it could be a new socket's by then
    assert key(900, 3) in keys.keys
    t.on_exit(900)
    assert t.get(900, 4) is None and not keys.keys
    assert t.get(PID, 3) is not None  # the parent's own are untouched


def test_full_kernel_set_keeps_no_entry() -> None:
    """The kernel could not track it (fd_tracked full): its close would not be seen, so
    the table keeps nothing for it and /proc answers instead."""
    t = table()
    raw = pack(code=sc.CODES["socket"], tgid=PID, ret=3,
               ints=(socket.AF_INET, socket.SOCK_STREAM, 0, 0, 0, 1))
    assert t.apply(decode(raw)) is not None
    assert t.get(PID, 3) is None


def test_bounded_the_oldest_process_goes_first() -> None:
    t = FdTable(proc_root="/nonexistent", keys=Keys(), max_processes=2)
    for pid in (1, 2, 3):
        t.apply(rec("socket", 3, (socket.AF_INET, socket.SOCK_STREAM, 0), pid=pid))
    assert t.get(1, 3) is None and t.get(2, 3) is not None and t.get(3, 3) is not None
    assert t.keys.removed == [key(1, 3)]  # type: ignore[union-attr]  # the kernel forgets it


def test_pipe_ends_are_pipes_across_dup_fork_exec_and_close() -> None:
    """pipe/pipe2 carry the two new numbers packed in slot 4, as the exit handler reads
    them from the caller's array; pipe2's O_CLOEXEC marks both ends."""
    t = table()
    ent = t.apply(rec("pipe2", 0, (0x7FF0, 0o2000000, 0, 0, 3 | 4 << 32)))
    assert ent is not None and ent.type == "pipe" and ent.cloexec
    t.apply(rec("pipe", 0, (0x7FF0, 0, 0, 0, 5 | 6 << 32)))
    assert [t.get(PID, fd).type for fd in (3, 4, 5, 6)] == ["pipe"] * 4  # type: ignore[union-attr]
    t.apply(rec("fcntl", 40, (5, 1030, 40)))  # F_DUPFD_CLOEXEC keeps the type
    assert t.get(PID, 40) is not None and t.get(PID, 40).type == "pipe"  # type: ignore[union-attr]
    t.apply(rec("dup2", 1, (6, 1)))
    assert t.get(PID, 1).type == "pipe"  # type: ignore[union-attr]
    t.on_fork(PID, PID + 1)
    t.on_exec(PID + 1)  # the close-on-exec ends go
    assert [fd for fd in (1, 3, 4, 5, 6, 40) if t.get(PID + 1, fd)] == [1, 5, 6]
    t.apply(rec("close", 0, (5,)))
    assert t.get(PID, 5) is None
    assert t.apply(rec("pipe2", -24, (0x7FF0, 0))) is None  # EMFILE: nothing made
