"""Syscalls watched with one exit handler that reads the arguments from the task's saved
registers give the very records that the enter+exit pairs give (the pairs are the
fallback for kernels without bpf_task_pt_regs, so both run here). Root; real probes, a
child making each watched syscall (opens directly through syscall(2), the rest through
the usual library calls)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from enforcer.sources import syscalls as sc
from enforcer.sources.ebpf import EbpfSource, available_syscalls, plan
from enforcer.sources.probe import ProbeConfig

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

# x86_64 syscall numbers: open 2, creat 85, ptrace 101, openat 257, bpf 321,
# userfaultfd 323, openat2 437
CHILD = r"""
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
work, tcp_port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.chdir(work)
def close(fd):
    if fd >= 0:
        os.close(fd)
close(libc.syscall(L(2), b"/etc/hostname", L(os.O_RDONLY), L(0)))  # the first record compared
close(libc.syscall(L(85), (work + "/created").encode(), L(0o640)))
close(libc.syscall(L(257), L(-100), b"missing-file", L(os.O_RDONLY), L(0)))
dfd = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
close(libc.syscall(L(257), L(dfd), b"hostname", L(os.O_RDONLY | os.O_CLOEXEC), L(0)))
close(libc.syscall(L(257), L(-100), b"new-file", L(os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                   L(0o600)))
how = (ctypes.c_uint64 * 3)(os.O_RDONLY | os.O_NOFOLLOW, 0, 0)
close(libc.syscall(L(437), L(-100), b"/etc/hostname", ctypes.byref(how), L(24)))
# network: a listener, a connect to it and one refused, datagrams with and without a peer
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", tcp_port))
srv.listen(4)
cli = socket.create_connection(("127.0.0.1", tcp_port))
peer, _ = srv.accept()
refused = socket.socket(socket.AF_INET6)
try:
    refused.connect(("::1", 9))
except OSError:
    pass
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", udp_port))
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out.sendto(b"one", ("127.0.0.1", udp_port))
out.sendmsg([b"two"], [], 0, ("127.0.0.1", udp_port))
udp.recvfrom(16)
udp.recvmsg(16)
out.connect(("127.0.0.1", udp_port))
out.send(b"three")
for s in (cli, peer, refused, udp, out, srv):
    s.close()
# files
os.mkdir("d", 0o750)
os.chmod("d", 0o700)
os.symlink("/etc/shadow", "lnk")
open("f", "w").close()
os.link("f", "f2")
os.rename("f2", "f3")
os.unlink("f3")
os.rmdir("d")
fd = os.open("f", os.O_RDONLY)
close(libc.dup(fd))
os.dup2(fd, 50)
os.close(50)
os.chdir("/tmp")
os.fchdir(dfd)
os.close(fd)
close(os.memfd_create("scratch"))
os.setgid(0)
os.setuid(0)
os.kill(1, 0)
libc.syscall(L(101), L(2), L(1), L(0), L(0))  # PTRACE_PEEKDATA on init: refused
libc.unshare(0)
libc.setns(-1, 0)
libc.mount(b"none", b"/nonexistent-mount-point", b"tmpfs", 0, None)
libc.syscall(L(321), L(-1), L(0), L(0))  # bpf with a bad command
close(libc.syscall(L(323), L(0)))  # userfaultfd
close(os.open("/etc/shadow", os.O_RDONLY))  # sentinel
"""


ID_ARGS = {a.tp for s in sc.BY_NAME.values() for a in s.ints if a.fmt in ("uid", "gid")}


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _normalised(rec: dict[str, Any], work: str, ports: set[int]) -> tuple[Any, ...]:
    """What both forms must agree on, without what differs from run to run (times, pids,
    user pointers, the work directory, ephemeral ports)."""
    keep = {k: v for k, v in rec.items()
            if k.startswith("evt.") or k in ("_s1", "_s2", "_comm", "user.uid", "group.gid")}
    # uid and gid arguments are named later, by the state: their numbers, as read
    keep |= {f"_ints.{k}": v for k, v in rec.get("_ints", {}).items() if k in ID_ARGS}
    sa = dict(rec.get("_sockaddr") or {})
    if sa.get("port") is not None and sa["port"] not in ports:
        sa["port"] = "ephemeral"
    keep["_sockaddr"] = sa
    return (rec["evt.type"], repr(sorted(keep.items())).replace(work, "WORK"))


def _run(at_exit: bool, work: Path, ports: tuple[int, int]) -> tuple[list, set[bytes], dict]:
    """The child's records (normalised, from its first open(2) on), the attached
    tracepoints, and the records by type."""
    cfg, _ = plan(None, available_syscalls(),
                  ProbeConfig(agent_tgid=os.getpid(), args_at_exit=at_exit))
    source = EbpfSource(cfg)
    source.open()
    got: list[dict[str, Any]] = []
    try:
        assert source.config.args_at_exit is at_exit, source.warnings
        attached = set(source._probe.bpf.tracepoint_fds)
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(work), *map(str, ports)])
        deadline = time.monotonic() + 30
        while (not any(r.get("_s1") == "/etc/shadow" and r["evt.type"] == "openat"
                       for r in got)
               and time.monotonic() < deadline):
            got += [r for r in source.poll(50) if r.get("proc.pid") == child.pid
                    and r.get("evt.type") in sc.BY_NAME]
        assert child.wait(10) == 0
    finally:
        source.close()
    first = next(i for i, r in enumerate(got) if r["evt.type"] == "open")
    got = got[first:]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in got:
        by_type.setdefault(r["evt.type"], []).append(r)
    return [_normalised(r, str(work), set(ports)) for r in got], attached, by_type


@pytest.fixture(scope="module")
def both(ebpf_ready: None, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Any]:
    ports = (_free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM))
    return {at_exit: _run(at_exit, tmp_path_factory.mktemp(f"at-exit-{at_exit}"), ports)
            for at_exit in (True, False)}


# the syscalls this module's workload makes and its tests look for
USED = ("open", "creat", "openat", "openat2", "socket", "bind", "listen", "connect", "accept4",
        "sendto", "sendmsg", "recvfrom", "recvmsg", "mkdir", "chmod", "symlink", "link",
        "rename", "unlink", "rmdir", "dup", "dup2", "chdir", "fchdir", "memfd_create",
        "setuid", "setgid", "kill", "ptrace", "unshare", "setns", "mount", "bpf",
        "userfaultfd")


def test_the_argument_order_matches_the_kernels_tracepoints(ebpf_ready: None) -> None:
    available = available_syscalls()
    # an unreadable tracefs must not pass for "nothing to compare"
    assert not set(USED + ("execve", "execveat")) - available, sorted(
        set(USED + ("execve", "execveat")) - available)
    for name in sorted(available):
        fmt = Path(f"/sys/kernel/tracing/events/syscalls/sys_enter_{name}/format").read_text()
        fields = re.findall(r"field:[^;]*?(\w+);\s*offset:(\d+)", fmt)
        assert tuple(f for f, off in fields if int(off) >= 16) == sc.ARG_ORDER[name], name


def test_exit_only_handlers_attach_an_enter_tracepoint_for_exec_alone(both: dict) -> None:
    at_exit, pair = both[True][1], both[False][1]
    enters = {tp for tp in at_exit if b"sys_enter_" in tp}
    assert enters == {b"syscalls:sys_enter_execve", b"syscalls:sys_enter_execveat"}
    assert b"syscalls:sys_enter_openat" in pair and b"syscalls:sys_enter_connect" in pair
    assert {tp for tp in pair if b"sys_exit_" in tp} == {tp for tp in at_exit
                                                         if b"sys_exit_" in tp}


def test_exit_only_records_equal_the_pairs(both: dict) -> None:
    at_exit, pair = both[True][0], both[False][0]
    assert [r[0] for r in at_exit] == [r[0] for r in pair]
    assert at_exit == pair
    kinds = {r[0] for r in at_exit}
    for wanted in USED:
        assert wanted in kinds, wanted


def test_exit_only_records_carry_the_arguments(both: dict) -> None:
    by = both[True][2]
    connects = [(r["_sockaddr"], r["evt.res"]) for r in by["connect"]]
    assert any(sa["ip"] == "::1" and sa["port"] == 9 and res == "ECONNREFUSED"
               for sa, res in connects)
    sendto = by["sendto"][0]
    assert sendto["_sockaddr"]["ip"] == "127.0.0.1" and sendto["evt.arg.size"] == 3
    assert by["sendmsg"][0]["_sockaddr"]["ip"] == "127.0.0.1"
    assert by["recvfrom"][0]["_sockaddr"]["ip"] == "127.0.0.1"
    sym = by["symlink"][0]
    assert sym["evt.arg.target"] == "/etc/shadow" and sym["evt.arg.linkpath"] == "lnk"
    assert by["mkdir"][0]["evt.arg.mode"] == "0750"
    dup2 = by["dup2"][0]
    assert dup2["evt.arg.newfd"] == 50 and dup2["evt.rawres"] == 50
    assert by["kill"][0]["_ints"] == {"pid": 1, "sig": 0}
    assert by["ptrace"][0]["evt.arg.request"] == "PTRACE_PEEKDATA"
    assert by["mount"][0]["evt.arg.dir"] == "/nonexistent-mount-point"
    assert by["chdir"][0]["evt.arg.path"] == "/tmp"
