"""The open family watched with one exit handler that reads the arguments from the task's
saved registers gives the very records that the enter+exit pair gives (the pair is the
fallback for kernels without bpf_task_pt_regs, so both run here). Root; real probes, a
child making each open-family syscall directly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from enforcer.sources.ebpf import EbpfSource, available_syscalls, plan
from enforcer.sources.probe import ProbeConfig
from enforcer.sources.syscalls import OPEN_FAMILY

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

# x86_64 syscall numbers: open 2, creat 85, openat 257, openat2 437
CHILD = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
work = sys.argv[1]
os.chdir(work)
def close(fd):
    if fd >= 0:
        os.close(fd)
close(libc.syscall(L(2), b"/etc/hostname", L(os.O_RDONLY), L(0)))
close(libc.syscall(L(85), (work + "/created").encode(), L(0o640)))
close(libc.syscall(L(257), L(-100), b"missing-file", L(os.O_RDONLY), L(0)))
dfd = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
close(libc.syscall(L(257), L(dfd), b"hostname", L(os.O_RDONLY | os.O_CLOEXEC), L(0)))
close(libc.syscall(L(257), L(-100), b"new-file", L(os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                   L(0o600)))
how = (ctypes.c_uint64 * 3)(os.O_RDONLY | os.O_NOFOLLOW, 0, 0)
close(libc.syscall(L(437), L(-100), b"/etc/hostname", ctypes.byref(how), L(24)))
close(os.open("/etc/shadow", os.O_RDONLY))  # sentinel
"""

FIELDS = ("evt.type", "_s1", "evt.rawres", "evt.arg.dirfd", "evt.arg.flags", "evt.arg.mode")


def _opens(at_exit: bool, work: Path) -> tuple[list[tuple[Any, ...]], set[bytes]]:
    """The child's open-family records (FIELDS, in order) and the attached tracepoints."""
    wanted = frozenset(OPEN_FAMILY) & available_syscalls()
    cfg, _ = plan(wanted, available_syscalls(),
                  ProbeConfig(agent_tgid=os.getpid(), open_args_at_exit=at_exit))
    source = EbpfSource(cfg)
    source.open()
    try:
        assert source.config.open_args_at_exit is at_exit, source.warnings
        attached = {tp for tp in source._probe.bpf.tracepoint_fds if b"open" in tp
                    or b"creat" in tp}
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(work)])
        got: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + 20
        while not any(r[1] == "/etc/shadow" for r in got) and time.monotonic() < deadline:
            for rec in source.poll(50):
                if rec.get("proc.pid") == child.pid and rec.get("evt.type") in OPEN_FAMILY:
                    got.append(tuple(rec.get(f) for f in FIELDS))
        assert child.wait(10) == 0
    finally:
        source.close()
    return got, attached


@pytest.fixture(scope="module")
def both(ebpf_ready: None, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Any]:
    out = {}
    for at_exit in (True, False):
        work = tmp_path_factory.mktemp(f"at-exit-{at_exit}")
        got, attached = _opens(at_exit, work)
        # the child's paths differ only by its work directory: compare without it; and
        # from its first open(2) on (what the interpreter opens before may vary)
        rows = [tuple(str(x).replace(str(work), "WORK") for x in r) for r in got]
        first = next(i for i, r in enumerate(rows) if r[0] == "open")
        out[at_exit] = (rows[first:], attached)
    return out


def test_exit_only_handlers_attach_no_enter_tracepoint_for_opens(both: dict) -> None:
    at_exit, pair = both[True][1], both[False][1]
    assert b"syscalls:sys_exit_openat" in at_exit and b"syscalls:sys_enter_openat" in pair
    assert not any(b"sys_enter_" in tp for tp in at_exit)
    assert {tp.replace(b"sys_enter_", b"sys_exit_") for tp in pair} == at_exit


def test_exit_only_records_equal_the_pairs(both: dict) -> None:
    at_exit, pair = both[True][0], both[False][0]
    assert at_exit == pair and len(at_exit) == 8
    rows = {(r[0], r[1]): r for r in at_exit}
    assert rows[("open", "/etc/hostname")][4] == "O_RDONLY"
    creat = rows[("creat", "WORK/created")]
    assert int(creat[2]) >= 0 and creat[5] == "0640"
    missing = rows[("openat", "missing-file")]
    assert missing[2] == "-2" and missing[3] == "-100"
    at_dir = rows[("openat", "hostname")]
    assert int(at_dir[2]) >= 0 and at_dir[3] != "-100" and "O_CLOEXEC" in at_dir[4]
    created = rows[("openat", "new-file")]
    assert "O_CREAT" in created[4] and "O_TRUNC" in created[4] and created[5] == "0600"
    how = rows[("openat2", "/etc/hostname")]
    assert "O_NOFOLLOW" in how[4] and int(how[2]) >= 0
