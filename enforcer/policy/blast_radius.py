"""The blast-radius breaker: per policy, how many DISTINCT workloads it acts on in a window.

A policy gone wrong (a rule that matches healthy software) acts on workload after workload;
an attacker repeats one attack from one workload. So the breaker counts distinct workloads
(enforcer.policy.workload), never matches:

- repeats from a workload the policy has answered are always admitted, and never trip it;
- a new workload is admitted while fewer than `workloads` distinct ones were active (acted
  on) within `window`; the one over the limit trips the breaker: the policy is suspended for
  new workloads only. The workloads it already answered stay under it (admitted, their
  in-kernel kill entries kept), so tripping it never frees an attacker;
- after `cooloff` it is half-open: one new workload is admitted as a trial; another new one
  within `window` of the trial suspends it again; none for a window closes it;
- `resume()` (the `enforcer policies resume NAME` command) closes it at once and starts the
  count afresh.

Pure and in memory (no I/O): the responder decides admission when a match is submitted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from enforcer.policy.workload import Workload

CLOSED = "closed"
SUSPENDED = "suspended"
HALF_OPEN = "half-open"

#: What a policy that says nothing gets (and `--breaker-*` changes): a broken policy on a
#: 110-pod node stops after five workloads; an attacker's repeats are never limited.
DEFAULT_WORKLOADS = 5
DEFAULT_WINDOW_S = 600.0
DEFAULT_COOLOFF_S = 600.0


@dataclass(frozen=True)
class BreakerLimits:
    """At most `workloads` distinct workloads acted on per `window` seconds; suspended for
    `cooloff` seconds when a new one goes over."""

    workloads: int = DEFAULT_WORKLOADS
    window: float = DEFAULT_WINDOW_S
    cooloff: float = DEFAULT_COOLOFF_S


@dataclass(frozen=True)
class Admission:
    """A breaker's verdict on one match: `admitted`; `new` (a workload not answered before,
    now counted); `tripped` (this match suspended the policy: say it loudly, once)."""

    admitted: bool
    new: bool = False
    tripped: bool = False
    state: str = CLOSED
    reason: str = ""


@dataclass
class _Known:
    keys: set[str]
    seen: float  # last time the policy acted on it (counted while within the window)


@dataclass
class Breaker:
    """One policy's breaker (thread-safe)."""

    policy: str
    limits: BreakerLimits = field(default_factory=BreakerLimits)
    clock: Callable[[], float] = time.monotonic
    state: str = CLOSED
    since: float = 0.0           # when the state began
    trial: float | None = None   # half-open: when the trial workload was admitted
    count_from: float = float("-inf")  # resume: activity before this is not counted
    trips: int = 0
    changes: int = 0  # state changes, whoever noticed them (see BlastRadius.tick)
    _known: dict[int, _Known] = field(default_factory=dict)
    _by_key: dict[str, int] = field(default_factory=dict)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, workload: Workload) -> Admission:
        """Decide one match from `workload` (and record it when admitted)."""
        with self._lock:
            now = self.clock()
            self._advance(now)
            ident = self._find(workload)
            if ident is not None:  # answered before: always, never a trip
                entry = self._known[ident]
                entry.seen = now
                for key in workload:
                    entry.keys.add(key)
                    self._by_key[key] = ident
                return Admission(True, state=self.state)
            if self.state == SUSPENDED:
                return Admission(False, state=SUSPENDED, reason=self._suspended_reason(now))
            if self.state == HALF_OPEN:
                if self.trial is None:
                    self.trial = now
                    self._add(workload, now)
                    return Admission(True, new=True, state=HALF_OPEN)
                return self._trip(now, "a second new workload while half-open")
            active = self.active(now)
            if active >= self.limits.workloads:
                return self._trip(now, f"{active} distinct workloads already acted on within "
                                       f"{self.limits.window:g}s (limit "
                                       f"{self.limits.workloads})")
            self._add(workload, now)
            return Admission(True, new=True, state=CLOSED)

    def would_admit(self, workload: Workload) -> bool:
        """Whether a match from `workload` would be admitted now, recording nothing (the
        in-kernel kill arms a process only if so)."""
        with self._lock:
            now = self.clock()
            self._advance(now)
            if self._find(workload) is not None:
                return True
            if self.state == SUSPENDED:
                return False
            if self.state == HALF_OPEN:
                return self.trial is None
            return self.active(now) < self.limits.workloads

    def resume(self) -> str:
        """Close the breaker now (by command); the count starts afresh. Returns the state
        it was in."""
        with self._lock:
            before = self.state
            now = self.clock()
            self.state, self.since, self.trial = CLOSED, now, None
            self.count_from = now
            return before

    def active(self, now: float) -> int:
        """Distinct workloads acted on within the window (and since the last resume)."""
        floor = now - self.limits.window
        return sum(1 for k in self._known.values()
                   if k.seen >= floor and k.seen > self.count_from)

    def answered(self) -> int:
        """Workloads that stay under the policy (answered, remembered)."""
        with self._lock:
            return len(self._known)

    def describe(self) -> dict[str, object]:
        """For `enforcer policies status` and the audit."""
        with self._lock:
            now = self.clock()
            self._advance(now)
            return {"policy": self.policy, "state": self.state, "trips": self.trips,
                    "active_workloads": self.active(now), "answered_workloads":
                    len(self._known), "limit": self.limits.workloads,
                    "window_s": self.limits.window, "cooloff_s": self.limits.cooloff,
                    "cooloff_left_s": max(0.0, self.since + self.limits.cooloff - now)
                    if self.state == SUSPENDED else 0.0}

    # -- inside the lock ---------------------------------------------------------------
    def _advance(self, now: float) -> None:
        """Time-driven transitions: cool-off over -> half-open; a trial that stayed alone
        for a window -> closed; closed: forget workloads idle for a window."""
        if self.state == SUSPENDED and now - self.since >= self.limits.cooloff:
            self.state, self.since, self.trial = HALF_OPEN, now, None
            self.changes += 1
        if self.state == HALF_OPEN and self.trial is not None and \
                now - self.trial >= self.limits.window:
            self.state, self.since, self.trial = CLOSED, now, None
            self.changes += 1
        if self.state == CLOSED:
            # only while closed: a suspended policy never forgets whom it answered
            old = [i for i, k in self._known.items() if k.seen < now - self.limits.window]
            for ident in old:
                for key in self._known.pop(ident).keys:
                    if self._by_key.get(key) == ident:
                        del self._by_key[key]

    def _find(self, workload: Workload) -> int | None:
        for key in workload:
            ident = self._by_key.get(key)
            if ident is not None:
                return ident
        return None

    def _add(self, workload: Workload, now: float) -> None:
        ident = self._next
        self._next += 1
        self._known[ident] = _Known(set(workload), now)
        for key in workload:
            self._by_key[key] = ident

    def _trip(self, now: float, why: str) -> Admission:
        self.state, self.since, self.trial = SUSPENDED, now, None
        self.trips += 1
        reason = (f"policy {self.policy!r} suspended for new workloads: {why}; the "
                  f"{len(self._known)} workloads it answered stay under it; half-open "
                  f"again in {self.limits.cooloff:g}s, or `enforcer policies resume "
                  f"{self.policy}`")
        return Admission(False, tripped=True, state=SUSPENDED, reason=reason)

    def _suspended_reason(self, now: float) -> str:
        left = max(0.0, self.since + self.limits.cooloff - now)
        return (f"policy {self.policy!r} is suspended for new workloads (blast radius over "
                f"{self.limits.workloads} workloads in {self.limits.window:g}s); half-open in "
                f"{left:.0f}s, or `enforcer policies resume {self.policy}`")


class BlastRadius:
    """The breakers of every policy, by name; kept across hot reloads (a reload never
    resets a suspension). `generation` changes whenever what `would_admit` answers for a
    new workload may have changed (the in-kernel kill re-arms then)."""

    def __init__(self, defaults: BreakerLimits | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.defaults = defaults or BreakerLimits()
        self.clock = clock
        self.breakers: dict[str, Breaker] = {}
        self.generation = 0
        self._lock = threading.Lock()

    def breaker(self, policy: str, limits: BreakerLimits | None = None) -> Breaker:
        """The policy's breaker (created on first use; new limits from a reload apply)."""
        want = limits or self.defaults
        with self._lock:
            found = self.breakers.get(policy)
            if found is None:
                found = self.breakers[policy] = Breaker(policy, want, self.clock)
            elif found.limits != want:
                found.limits = want
            return found

    def admit(self, policy: str, workload: Workload,
              limits: BreakerLimits | None = None) -> Admission:
        verdict = self.breaker(policy, limits).admit(workload)
        if verdict.new or verdict.tripped:
            self.generation += 1
        return verdict

    def would_admit(self, policy: str, workload: Workload,
                    limits: BreakerLimits | None = None) -> bool:
        found = self.breakers.get(policy)
        if found is None:
            return True
        if limits is not None and found.limits != limits:
            found.limits = limits
        return found.would_admit(workload)

    def resume(self, policy: str) -> str | None:
        """Resume a policy by name: the state it was in, or None when it has no breaker."""
        found = self.breakers.get(policy)
        if found is None:
            return None
        before = found.resume()
        self.generation += 1
        return before

    def tick(self) -> int:
        """Apply time-driven transitions (cool-off ending); returns the generation, which
        changes with every transition, also those noticed by `would_admit` or `admit`."""
        changes = 0
        for b in list(self.breakers.values()):
            with b._lock:
                b._advance(self.clock())
                changes += b.changes
        return self.generation + changes

    def describe(self) -> list[dict[str, object]]:
        return [b.describe() for b in list(self.breakers.values())]
