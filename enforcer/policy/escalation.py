"""Escalation: when the same workload keeps triggering a policy, its `escalate.actions` run
too (e.g. quarantine after the fifth kill within a minute), so that a persistent attacker is
isolated rather than killed forever. Counted in memory at submit time (no I/O)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from enforcer.policy.model import Escalation
from enforcer.policy.workload import Workload

MAX_TRACKED = 100_000


class Repeats:
    """Matches per (policy, workload) within each policy's `escalate.within`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.seen: dict[tuple[str, str], deque[float]] = {}
        self.lock = threading.Lock()

    def count(self, policy: str, workload: Workload, escalation: Escalation) -> bool:
        """Count one match; True when it is the `after`-th within `within` (the count then
        starts again, so the next escalation needs `after` more repeats)."""
        # the workload's most specific key: a container, or a host user
        key = (policy, workload[-1] if workload else "unknown")
        with self.lock:
            now = self.clock()
            times = self.seen.get(key)
            if times is None:
                if len(self.seen) >= MAX_TRACKED:
                    self._prune(now, escalation.within)
                times = self.seen[key] = deque()
            while times and times[0] <= now - escalation.within:
                times.popleft()
            times.append(now)
            if len(times) >= escalation.after:
                times.clear()
                return True
            return False

    def _prune(self, now: float, within: float) -> None:
        self.seen = {k: t for k, t in self.seen.items() if t and t[-1] > now - within}
