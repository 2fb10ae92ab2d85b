"""How the responder's worker thread is scheduled, so that a kill does not queue behind the
node's workloads (or behind an attacker keeping every CPU busy).

Measured on a loaded 2-CPU machine (tests/bench/bench_kill_latency.py): the worker spent up
to 80 ms runnable but not running (its /proc/.../schedstat run delay), at nice -10, because
nice only orders threads inside the agent's own scheduling group (its autogroup, or its
container's cpu cgroup); against every other group it gets a fair share like any process.
A real-time policy (SCHED_FIFO) is served before every ordinary thread of the node, whatever
their group. The worker sleeps on its queue almost all the time and a kill costs well under
a millisecond of CPU, so it is run at that priority; actions that can take long CPU time
(a snapshot's compression, Kubernetes calls) go back to ordinary scheduling while they run
(`ordinary()`), so that the agent never takes a CPU from the node for long.

Without CAP_SYS_NICE, or in a cpu cgroup without real-time runtime (cgroup v1 with
RT_GROUP_SCHED), SCHED_FIFO is refused: the worker then gets nice -10, as before, and
`describe()` says so.

The interpreter's switch interval is lowered too: a thread waiting for the GIL asks for it
only after the interval (5 ms by default), and each system call of the kill path (reading
/proc, writing the audit record) gives the GIL up; with a busy detection thread, every one of
them could cost the worker a full interval.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

FIFO_PRIORITY = 10  # low among real-time priorities: kernel threads at 50 still come first
NICE = -10
SWITCH_INTERVAL_S = 0.0005


class WorkerPriority:
    """The worker thread's scheduling: `raise_()` once on the thread; `ordinary()` around
    work that must not run at real-time priority; `lower()` once a kill's signal is sent
    (the rest of the match: audit records, later actions, need no priority, and the dying
    process and the event loop may have the CPU); `restore()` before waiting for the next
    match."""

    def __init__(self, realtime: bool = True):
        self.realtime_wanted = realtime
        self.realtime = False  # the worker may run at real-time priority
        self.lowered = False   # ... but runs with ordinary scheduling for now
        self.nice: int | None = None
        self.tid: int | None = None
        self.error: str | None = None

    def raise_(self) -> None:
        """Call on the worker thread: SCHED_FIFO when allowed, else nice -10, else as is."""
        self.tid = threading.get_native_id()
        if self.realtime_wanted:
            try:
                os.sched_setscheduler(self.tid, os.SCHED_FIFO,
                                      os.sched_param(FIFO_PRIORITY))
                self.realtime = True
                return
            except (OSError, AttributeError) as exc:
                self.error = getattr(exc, "strerror", None) or str(exc)
        try:
            os.setpriority(os.PRIO_PROCESS, self.tid, NICE)
            self.nice = NICE
        except (OSError, AttributeError):
            pass

    def lower(self) -> None:
        """Ordinary scheduling (nice -10 when allowed) until `restore()`."""
        if not self.realtime or self.lowered or self.tid is None:
            return
        try:
            os.sched_setscheduler(self.tid, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            return
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self.tid, NICE)
        self.lowered = True

    def restore(self) -> None:
        """Back to real-time after `lower()`."""
        if not self.lowered or self.tid is None:
            return
        self.lowered = False
        try:
            os.sched_setscheduler(self.tid, os.SCHED_FIFO, os.sched_param(FIFO_PRIORITY))
        except OSError as exc:
            self.realtime = False
            self.error = exc.strerror or str(exc)

    @contextlib.contextmanager
    def ordinary(self) -> Iterator[None]:
        """Run the block with ordinary scheduling, then go back to how it was before."""
        was_lowered = self.lowered
        self.lower()
        try:
            yield
        finally:
            if not was_lowered:
                self.restore()

    def describe(self) -> str:
        """For the start-up log and the stop summary."""
        if self.realtime:
            return f"SCHED_FIFO {FIFO_PRIORITY}"
        if self.nice is not None:
            why = f" (SCHED_FIFO refused: {self.error})" if self.error else ""
            return f"nice {self.nice}{why}"
        return "default scheduling"


def shorten_switch_interval(seconds: float = SWITCH_INTERVAL_S) -> None:
    """Lower the interpreter's GIL switch interval to `seconds` (never raise it)."""
    if sys.getswitchinterval() > seconds:
        sys.setswitchinterval(seconds)
