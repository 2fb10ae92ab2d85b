"""The blast-radius breaker counts distinct workloads, never matches: repeats from one
workload never trip it; the workload over the limit suspends the policy for new workloads
only; cool-off gives a half-open trial; resume closes it."""

from __future__ import annotations

import pytest

from enforcer.policy.blast_radius import (
    CLOSED,
    HALF_OPEN,
    SUSPENDED,
    BlastRadius,
    Breaker,
    BreakerLimits,
)
from enforcer.policy.workload import workload_of


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def user(uid: int) -> tuple[str, ...]:
    return workload_of({"container.id": "host", "user.uid": uid}.get)


def breaker(clock: Clock, workloads: int = 3) -> Breaker:
    return Breaker("p", BreakerLimits(workloads, window=60, cooloff=300), clock)


def test_repeats_from_one_workload_never_trip_it() -> None:
    b = breaker(Clock())
    assert all(b.admit(user(0)).admitted for _ in range(10_000))
    assert b.state == CLOSED and b.trips == 0


@pytest.mark.parametrize("fields", [
    # pids, exe copies, file names, process names are not part of a workload
    [{"container.id": "host", "user.uid": 1000, "proc.pid": p, "proc.exe": f"/tmp/cat{p}",
      "fd.name": f"/etc/f{p}"} for p in range(50)],
    [{"container.id": "abc123", "k8s.pod.uid": None, "user.uid": p, "proc.pid": p}
     for p in range(50)],
])
def test_what_an_attacker_varies_cheaply_is_one_workload(fields: list[dict]) -> None:
    b = breaker(Clock(), workloads=1)
    assert all(b.admit(workload_of(f.get)).admitted for f in fields)
    assert b.state == CLOSED


def test_over_the_limit_suspends_for_new_workloads_only() -> None:
    clock = Clock()
    b = breaker(clock)
    assert [b.admit(user(u)).new for u in (1, 2, 3)] == [True, True, True]
    verdict = b.admit(user(4))
    assert not verdict.admitted and verdict.tripped and b.state == SUSPENDED
    assert "suspended for new workloads" in verdict.reason
    again = b.admit(user(5))
    assert not again.admitted and not again.tripped
    # those already answered stay under it, long after the window
    clock.now += 200
    assert all(b.admit(user(u)).admitted for u in (1, 2, 3))
    assert not b.would_admit(user(6)) and b.would_admit(user(1))


def test_half_open_after_cooloff_admits_one_trial_and_re_suspends() -> None:
    clock = Clock()
    b = breaker(clock)
    for u in (1, 2, 3, 4):
        b.admit(user(u))
    clock.now += 301
    assert b.would_admit(user(10))
    trial = b.admit(user(10))
    assert trial.admitted and trial.state == HALF_OPEN
    second = b.admit(user(11))
    assert not second.admitted and second.tripped and b.state == SUSPENDED and b.trips == 2
    assert b.admit(user(10)).admitted  # the trial workload was answered: it stays under it


def test_half_open_closes_when_the_trial_stays_alone_for_a_window() -> None:
    clock = Clock()
    b = breaker(clock)
    for u in (1, 2, 3, 4):
        b.admit(user(u))
    clock.now += 301
    b.admit(user(10))
    clock.now += 61
    assert b.admit(user(11)).admitted and b.state == CLOSED


def test_resume_closes_and_counts_afresh() -> None:
    clock = Clock()
    radius = BlastRadius(BreakerLimits(2, 60, 300), clock)
    for u in (1, 2, 3):
        radius.admit("p", user(u))
    assert radius.breakers["p"].state == SUSPENDED
    generation = radius.generation
    assert radius.resume("p") == SUSPENDED and radius.generation > generation
    assert radius.admit("p", user(7)).admitted and radius.admit("p", user(8)).admitted
    assert radius.resume("nope") is None


def test_policies_have_separate_breakers() -> None:
    radius = BlastRadius(BreakerLimits(1, 60, 300), Clock())
    radius.admit("wrong", user(1))
    assert radius.admit("wrong", user(2)).tripped
    assert radius.admit("other", user(2)).admitted


def test_a_late_pod_uid_is_the_same_workload_and_a_restart_keeps_the_pod() -> None:
    b = breaker(Clock(), workloads=1)
    assert b.admit(workload_of({"container.id": "c1"}.get)).new
    assert b.admit(workload_of({"container.id": "c1", "k8s.pod.uid": "u1"}.get)).admitted
    # the kubelet restarted the container: new container id, same pod
    assert b.admit(workload_of({"container.id": "c2", "k8s.pod.uid": "u1"}.get)).admitted
    assert b.state == CLOSED


def test_closed_forgets_idle_workloads_after_a_window() -> None:
    clock = Clock()
    b = breaker(clock, workloads=2)
    b.admit(user(1))
    b.admit(user(2))
    clock.now += 61
    assert b.admit(user(3)).new and b.state == CLOSED


def test_a_cooloff_noticed_by_anyone_changes_the_generation() -> None:
    """The in-kernel kill re-arms when the generation changes: a transition first seen by
    would_admit (an exec being armed) must change it too."""
    clock = Clock()
    radius = BlastRadius(BreakerLimits(1, 60, 300), clock)
    radius.admit("p", user(1))
    radius.admit("p", user(2))
    before = radius.tick()
    clock.now += 301
    assert radius.would_admit("p", user(3))  # half-open, noticed here
    assert radius.tick() != before
