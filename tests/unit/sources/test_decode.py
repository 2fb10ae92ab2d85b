"""decode() reads the probe's fixed-size records; pack() builds them as the kernel does."""

from __future__ import annotations

import socket
import struct

import pytest

from enforcer.sources import syscalls as sc
from enforcer.sources.decode import (
    RECORD_SIZE,
    decode,
    errno_text,
    mode_text,
    open_flags_text,
    pack,
    parse_sockaddr,
)


def test_record_size_matches_the_c_struct_layout() -> None:
    # header 116, two paths 256, sockaddr 128, argv 1024, pad 4, trailer 24
    assert RECORD_SIZE == 1808


def test_openat_record() -> None:
    raw = pack(code=sc.CODES["openat"], tgid=42, tid=43, uid=1000, gid=100, ret=3,
               ints=(-100, 0o2000000, 0), comm="cat",
               path1="/etc/shadow", cgroup_id=77)
    ev = decode(raw)
    assert ev["evt.type"] == "openat"
    assert ev["proc.pid"] == 42 and ev["thread.tid"] == 43
    assert ev["user.uid"] == 1000 and ev["group.gid"] == 100
    assert ev["evt.rawres"] == 3 and ev["evt.res"] == "3" and ev["evt.arg.fd"] == 3
    assert ev["evt.arg.dirfd"] == -100
    assert ev["evt.arg.flags"] == "O_RDONLY|O_CLOEXEC"
    assert ev["evt.arg.name"] == "/etc/shadow"
    assert ev["_comm"] == "cat" and ev["_cgroup_id"] == 77


def test_failed_open_has_errno_name() -> None:
    ev = decode(pack(code=sc.CODES["open"], ret=-2, ints=(1,), path1="/nope"))
    assert ev["evt.res"] == "ENOENT" and ev["evt.rawres"] == -2


def test_execve_record_carries_argv() -> None:
    ev = decode(pack(code=sc.CODES["execve"], path1="/bin/sh", comm="sh",
                     argv=("sh", "-c", "cat /etc/shadow")))
    assert ev["evt.type"] == "execve"
    assert ev["_argv"] == ["sh", "-c", "cat /etc/shadow"]
    assert ev["evt.arg.filename"] == "/bin/sh"


def test_connect_record_parses_the_address() -> None:
    sa = struct.pack("<H", socket.AF_INET) + (443).to_bytes(2, "big") + bytes([10, 0, 0, 1])
    ev = decode(pack(code=sc.CODES["connect"], ints=(5, 0, 16), saddr=sa + bytes(8)))
    assert ev["_sockaddr"] == {"family": "ipv4", "ip": "10.0.0.1", "port": 443}
    assert ev["evt.arg.fd"] == 5


def test_fork_and_exit_records() -> None:
    fork = decode(pack(code=sc.EV_FORK, tgid=10, ints=(11, 10)))
    assert fork["evt.type"] == "fork" and fork["_child"] == 11
    assert decode(pack(code=sc.EV_EXIT, tgid=10))["evt.type"] == "procexit"


def test_symlink_and_ptrace_and_socket_arguments() -> None:
    ev = decode(pack(code=sc.CODES["symlinkat"], path1="/etc/shadow", path2="/tmp/x",
                     ints=(-100,)))
    assert ev["evt.arg.target"] == "/etc/shadow" and ev["evt.arg.linkpath"] == "/tmp/x"
    ev = decode(pack(code=sc.CODES["ptrace"], ints=(16, 1234)))
    assert ev["evt.arg.request"] == "PTRACE_ATTACH"
    ev = decode(pack(code=sc.CODES["socket"], ints=(17, 3, 768), ret=4))
    assert ev["evt.arg.domain"] == "AF_PACKET" and ev["evt.arg.fd"] == 4


@pytest.mark.parametrize(("flags", "text"), [
    (0, "O_RDONLY"), (1 | 0o100 | 0o1000, "O_WRONLY|O_CREAT|O_TRUNC"),
    (2 | 0o2000, "O_RDWR|O_APPEND"), (0o20200000 | 2, "O_RDWR|O_TMPFILE"),
])
def test_open_flags_text(flags: int, text: str) -> None:
    assert open_flags_text(flags) == text


def test_mode_and_errno_text() -> None:
    assert mode_text(0o4755) == ("S_ISUID|S_IRUSR|S_IWUSR|S_IXUSR|S_IRGRP|S_IXGRP|"
                                 "S_IROTH|S_IXOTH")
    assert errno_text(0) == "SUCCESS" and errno_text(-13) == "EACCES"
    assert errno_text(-115) == "EINPROGRESS"


@pytest.mark.parametrize(("raw", "parsed"), [
    (b"", None), (b"\x02", None),
    (b"\x0a\x00" + bytes(5), {"family": "AF_INET6"}),  # too short for its address
    (b"\xff\xff", {"family": "65535"}),
])
def test_parse_sockaddr_never_raises(raw: bytes, parsed: dict | None) -> None:
    assert parse_sockaddr(raw) == parsed


def test_parse_sockaddr_ipv6_mapped_and_unix() -> None:
    sa6 = (struct.pack("<H", socket.AF_INET6) + (22).to_bytes(2, "big") + bytes(4)
           + bytes(10) + b"\xff\xff" + bytes([192, 168, 1, 2]) + bytes(4))
    assert parse_sockaddr(sa6) == {"family": "ipv6", "port": 22, "ip": "192.168.1.2"}
    un = struct.pack("<H", socket.AF_UNIX) + b"/run/x.sock\0"
    assert parse_sockaddr(un) == {"family": "unix", "path": "/run/x.sock"}


def test_a_record_in_a_batch_decodes_as_it_does_alone() -> None:
    """The reader hands decode() a batch of records and each one's offset: every part of a
    record (paths, argv, address, an accept's local end) must be read at that offset (an
    accept's local end once came from the batch's start)."""
    sa = struct.pack("<H", socket.AF_INET) + (443).to_bytes(2, "big") + bytes([10, 0, 0, 1])
    records = [
        pack(code=sc.CODES["openat"], tgid=42, ints=(-100, 0, 0), path1="/etc/shadow"),
        pack(code=sc.CODES["execve"], path1="/bin/sh", argv=("sh", "-c", "id")),
        pack(code=sc.CODES["accept4"], ret=4, ints=(3, 0, 0, 0), path2="local-end-bytes-x" * 2,
             saddr=sa + bytes(8)),
        pack(code=sc.CODES["connect"], ints=(5, 0, 16), saddr=sa + bytes(8)),
    ]
    batch = bytes(range(13))  # a lead-in of other bytes, as the ring's record headers are
    offsets = []
    for raw in records:
        offsets.append(len(batch))
        batch += raw
    for raw, off in zip(records, offsets, strict=True):
        assert decode(batch, off) == decode(raw)
    assert decode(records[2])["_local"] != (0, 0, 0)


def test_a_record_cut_after_its_path_reads_nothing_past_it() -> None:
    """The kernel emits a record with no second path, address or argv only up to the end of
    its first path: an accept without an address (busybox nc) is one, and decoding it last
    in a batch must not read past the batch's end."""
    from enforcer.sources.decode import MIN_RECORD_SIZE  # noqa: PLC0415

    raw = pack(code=sc.CODES["accept4"], tgid=7, ret=4, ints=(3, 0, 0, 0))
    batch = bytes(5) + raw[:MIN_RECORD_SIZE]
    ev = decode(batch, 5)
    assert ev["evt.type"] == "accept4" and ev["proc.pid"] == 7
    assert ev["_local"] == (0, 0, 0) and "_sockaddr" not in ev
