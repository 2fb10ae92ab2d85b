"""Process identity: a pid is only trusted together with its start time, and signals go
through a pidfd opened once that identity is verified, so that a reused pid is never hit.

Start time comes from the event as `proc.start_ticks` (clock ticks since boot, field 22 of
/proc/PID/stat — exact) or `proc.pid.ts` (Falco's epoch nanoseconds — compared within
`EPOCH_TOLERANCE_NS`, since /proc only knows ticks)."""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
TICK_NS = 1_000_000_000 // TICKS_PER_SECOND
EPOCH_TOLERANCE_NS = 2 * TICK_NS + 5_000_000
START_FIELDS = ("proc.start_ticks", "proc.pid.ts")


class ProcessGone(Exception):
    """The process has exited (nothing left to do)."""


class IdentityMismatch(Exception):
    """The pid now belongs to another process than the one the event saw."""


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    pgrp: int
    start_ticks: int
    flags: int = 0  # the kernel's task flags (PF_KTHREAD...)


PF_KTHREAD = 0x00200000
PF_EXITING = 0x00000004  # set as the process starts to exit (a delivered SIGKILL included)
_SIGKILL_BIT = 1 << (signal.SIGKILL - 1)


def read_stat(pid: int) -> ProcStat | None:
    """/proc/PID/stat parsed (comm may hold spaces and parentheses), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError as exc:
        if exc.errno in (errno.ESRCH, errno.ENOENT):
            return None
        raise
    head, _, tail = raw.rpartition(")")
    comm = head.partition("(")[2]
    rest = tail.split()
    # rest[0] is field 3 (state); starttime is field 22
    return ProcStat(pid=pid, comm=comm, state=rest[0], ppid=int(rest[1]), pgrp=int(rest[2]),
                    start_ticks=int(rest[19]), flags=int(rest[6]))


def boot_epoch_ns() -> int:
    """Wall-clock time of boot, in ns (what a start time in ticks is relative to)."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def ticks_to_epoch_ns(ticks: int) -> int:
    return boot_epoch_ns() + ticks * TICK_NS


def expected_start(event: Any) -> tuple[str, int] | None:
    """('ticks', n) or ('epoch_ns', n) from the event, or None when it carries neither."""
    for name, kind in (("proc.start_ticks", "ticks"), ("proc.pid.ts", "epoch_ns")):
        value = event.get(name) if event is not None else None
        if value not in (None, "", "<NA>"):
            try:
                return kind, int(value)
            except (TypeError, ValueError):
                return None
    return None


def same_start(actual_ticks: int, expected: tuple[str, int]) -> bool:
    kind, value = expected
    if kind == "ticks":
        return actual_ticks == value
    return abs(ticks_to_epoch_ns(actual_ticks) - value) <= EPOCH_TOLERANCE_NS


def is_kernel_thread(pid: int, stat: ProcStat | None = None) -> bool:
    """The kernel's own flag (PF_KTHREAD), or a child of kthreadd (pid 2). Not "has no
    executable": a process that is exiting has none either."""
    stat = stat or read_stat(pid)
    if pid == 2:
        return True
    return stat is not None and (bool(stat.flags & PF_KTHREAD) or stat.ppid == 2)


def namespace_pids(pid: int) -> list[int]:
    """NSpid from /proc/PID/status: the pid in each nested pid namespace, outermost first."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except OSError:
        return []
    return [pid]


def ancestors(pid: int, limit: int = 512) -> list[int]:
    """Parent, grandparent… up to pid 1 (or as far as /proc tells)."""
    chain: list[int] = []
    current = pid
    for _ in range(limit):
        stat = read_stat(current)
        if stat is None or stat.ppid <= 0:
            break
        chain.append(stat.ppid)
        if stat.ppid == 1:
            break
        current = stat.ppid
    return chain


@dataclass
class ProcessHandle:
    """A verified process: pid, start ticks, and a pidfd that cannot hit a reused pid."""

    pid: int
    start_ticks: int
    comm: str
    pgrp: int
    pidfd: int = field(repr=False)

    @classmethod
    def open(cls, pid: int, expected: tuple[str, int] | None) -> ProcessHandle:
        """Open a pidfd for `pid`, then check that it is the process the event saw.

        Order matters: the pidfd pins one process; the start time read afterwards is that
        process's as long as it is still alive, which the final signal-0 through the pidfd
        proves. Raises ProcessGone or IdentityMismatch."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise ProcessGone(f"process {pid} has already exited") from None
        try:
            stat = read_stat(pid)
            if stat is None:
                raise ProcessGone(f"process {pid} has already exited")
            if expected is not None and not same_start(stat.start_ticks, expected):
                raise IdentityMismatch(
                    f"pid {pid} now belongs to another process ({stat.comm!r}, started at "
                    f"tick {stat.start_ticks}; the event's process started "
                    f"{_describe(expected)}): not touching it")
            try:
                signal.pidfd_send_signal(pidfd, 0)
            except ProcessLookupError:
                raise ProcessGone(f"process {pid} has already exited") from None
            return cls(pid=pid, start_ticks=stat.start_ticks, comm=stat.comm, pgrp=stat.pgrp,
                       pidfd=pidfd)
        except BaseException:
            os.close(pidfd)
            raise

    def alive(self) -> bool:
        try:
            signal.pidfd_send_signal(self.pidfd, 0)
            return True
        except ProcessLookupError:
            return False

    def dying(self) -> bool:
        """Whether the process is already on its way out: exiting, a zombie, or with a
        SIGKILL pending (an in-kernel kill sends it at the syscall; it is delivered when
        the syscall returns). True also when it is gone."""
        stat = read_stat(self.pid)
        if stat is None or stat.start_ticks != self.start_ticks:
            return True
        if stat.flags & PF_EXITING or stat.state in ("Z", "X", "x"):
            return True
        try:
            with open(f"/proc/{self.pid}/status", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith(("SigPnd:", "ShdPnd:")) and \
                            int(line.split()[1], 16) & _SIGKILL_BIT:
                        return True
        except OSError:
            return True
        return False

    def send(self, signum: int) -> bool:
        """Signal through the pidfd. False when the process had already exited."""
        try:
            signal.pidfd_send_signal(self.pidfd, signum)
            return True
        except ProcessLookupError:
            return False

    def close(self) -> None:
        if self.pidfd >= 0:
            try:
                os.close(self.pidfd)
            finally:
                self.pidfd = -1

    def identity(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_ticks": self.start_ticks, "comm": self.comm}


def _describe(expected: tuple[str, int]) -> str:
    kind, value = expected
    return f"at tick {value}" if kind == "ticks" else f"at epoch ns {value}"
