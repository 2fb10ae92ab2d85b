"""The responder: answers alerts with the actions of matching policies, on its own worker
thread, so that detection never waits on a response.

`submit(alert)` runs on the detection thread and only does what must happen at once, all in
memory: select the matching policies, decide admission (each policy's rate limit, and its
blast-radius breaker: enforcer.policy.blast_radius, keyed on the distinct workloads it acts
on), count repeats for escalation, and — when a policy kills — open a pidfd on the event's
process and check its start time, so that the process is pinned before its pid can be
reused. Everything else (guards, plans, retries, audit) runs on the worker. A full queue
drops the match, counts it and audits it. When a policy's first action is a kill, submit()
gives the worker the interpreter until the signal is sent (at most 2 ms).

Dry-run is decided here and only here: globally (`dry_run=True`) or per policy; actions
receive the verdict in `apply(plan, dry_run)`. Nothing a workload does turns the agent to
dry-run: a policy over its blast radius is suspended alone, for new workloads only.

An action may leave background work (a snapshot's upload: `Outcome.follow_up`): it runs on
a follow-up thread of its own, with the same bounded retries, after the action's record is
written, and is audited as its own action record; the next actions of the policy (a kill)
do not wait for it.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.base import (
    COOLDOWN,
    DONE,
    DRY_RUN,
    FAILED,
    NOOP,
    RATE_LIMITED,
    SKIPPED,
    SUPPRESSED,
    AlreadyDone,
    FollowUp,
    Plan,
    Refused,
)
from actions.context import ActionContext, MissingFields
from actions.process import IdentityMismatch, ProcessGone, ProcessHandle, expected_start
from enforcer.alert import Alert
from enforcer.audit.record import (
    ACTION,
    BREAKER,
    DECISION,
    DROP,
    MATCH,
    AuditRecord,
    AuditSink,
    new_match_id,
)
from enforcer.errors import ActionError
from enforcer.outputs.escape import escape_control
from enforcer.policy.blast_radius import Admission, BlastRadius
from enforcer.policy.escalation import Repeats
from enforcer.policy.guards import Guards
from enforcer.policy.model import ActionStep, Policy, PolicySet
from enforcer.policy.ratelimit import Cooldowns, TokenBucket
from enforcer.policy.workload import Workload, alert_workload, describe, workload_of
from enforcer.priority import Priority
from enforcer.respond.fair_pool import FairPool, importance
from enforcer.respond.retry import RetryLog, RetryPolicy, call_with_retries
from enforcer.respond.scheduling import WorkerPriority, shorten_switch_interval
from enforcer.respond.services import Services

BREAKER_RULE = "Enforcer policy suspended"
SUSPENDED_OUTCOME = "suspended"
# How long submit() lets the worker have the interpreter for a kill (see `_hand_over`).
KILL_HANDOFF_S = 0.002


class _Job:
    __slots__ = ("alert", "policies", "match_id", "process", "received_ns", "digest", "held",
                 "signalled", "refused", "escalate", "workload", "deferred")

    def __init__(self, alert: Alert, policies: list[Policy], match_id: str, process: Any,
                 digest: str | None = None):
        self.alert = alert
        self.policies = policies
        self.match_id = match_id
        self.process = process
        self.received_ns = time.time_ns()
        self.digest = digest  # of the policy set that selected `policies`
        # the match's records not yet written: held until a kill's signal is sent (worker)
        self.held: list[AuditRecord] = []
        # set by the worker once a kill that comes first is signalled (see _hand_over)
        self.signalled: threading.Event | None = None
        # decided at submit: policies refused ({name: (outcome, reason, admission)}), and
        # those whose escalation this match reaches
        self.refused: dict[str, tuple[str, str, Admission | None]] = {}
        self.escalate: set[str] = set()
        self.workload: Workload = ()
        # kills waiting for what must precede them (the pidfd stays open until they ran)
        self.deferred = 0


@dataclass(slots=True)
class _SlowJob:
    """A policy's actions that run on the slow lane (enforcer.respond.fair_pool)."""

    job: _Job
    policy: Policy
    steps: list[tuple[int, ActionStep]]
    dry_run: bool
    results: dict[str, Any]
    then: Any = None  # a _Resume to queue on the kill lane when these are done


@dataclass(slots=True)
class _Resume:
    """A policy's kill and what follows it, queued back on the kill lane once the actions
    that must precede it (a snapshot) are done, or their time bound is over."""

    job: _Job
    policy: Policy
    steps: list[ActionStep]
    start: int
    dry_run: bool
    results: dict[str, Any]
    lock: threading.Lock
    timer: threading.Timer | None = None
    queued: bool = False


@dataclass(slots=True)
class _FollowUpJob:
    """Work an action left to run after the match (a snapshot's upload)."""

    job: _Job
    policy: Policy
    index: int
    action: str
    follow_up: FollowUp
    target: Any
    render: Any


_STOP = object()


class Responder:
    """Policy-driven responses with guards, budgets, rate limits, retries and audit."""

    def __init__(self, policies: PolicySet, audit: AuditSink, *, dry_run: bool = False,
                 node_name: str | None = None, guards: Guards | None = None,
                 blast_radius: BlastRadius | None = None, queue_size: int = 4096,
                 services: Services | None = None, retry: RetryPolicy | None = None,
                 state_dir: str | Path = "/run/enforcer",
                 snapshot_dir: str | Path = "/var/lib/enforcer/snapshots",
                 on_critical: Callable[[Alert], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 hostname: str = "", policy_digest: str | None = None,
                 on_outcome: Callable[[Alert, AuditRecord], Any] | None = None,
                 realtime: bool = True, follow_up_queue_size: int = 256,
                 control_socket: str | Path | None = None, slow_lane_size: int = 256,
                 slow_lane_threads: int = 2, pre_kill_timeout: float = 2.0):
        self.policies = policies
        # Told of every action outcome after it is audited (Kubernetes Events); must not
        # block: it runs on the responder's threads (the worker, and the follow-up thread
        # for a snapshot's upload).
        self.on_outcome = on_outcome
        # Every alert comes from outside (the falco-http input): in dry-run nothing may
        # reach out because of it (notify, Kubernetes Events), since a received alert may be
        # unauthenticated text; it acts and notifies only when authenticated and live.
        self.received_alerts = False
        self._stopping = False
        self.policy_digest = policy_digest
        self.clock = clock
        self.audit = audit
        self.dry_run = dry_run
        self.node_name = node_name
        self.guards = guards or Guards(node_name=node_name)
        self.blast_radius = blast_radius or BlastRadius(clock=clock)
        # `enforcer policies resume|status` (enforcer.respond.control); None: not served
        self.control_socket = control_socket
        self.control: Any = None
        # the admission generation the in-kernel kill has armed by (set when it is loaded)
        self.kernel_applied: Callable[[], int | None] | None = None
        self.repeats = Repeats(clock)
        self.services = services or Services()
        self.retry = retry or RetryPolicy()
        self.state_dir = Path(state_dir)
        self.snapshot_dir = Path(snapshot_dir)
        self.on_critical = on_critical or _print_critical
        self.hostname = hostname
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.follow_ups: queue.Queue[Any] = queue.Queue(maxsize=follow_up_queue_size)
        # how long a kill waits for the actions its policy puts before it (a snapshot)
        self.pre_kill_timeout = pre_kill_timeout
        # snapshot, notify, Kubernetes actions: never on the kill lane (the worker)
        self.slow = FairPool(self._run_slow, self._slow_dropped, capacity=slow_lane_size,
                             threads=slow_lane_threads)
        self.buckets = {p.name: TokenBucket(p.rate_limit.max, p.rate_limit.per,
                                            p.rate_limit.burst, clock)
                        for p in policies.policies if p.rate_limit}
        self.cooldowns = Cooldowns(clock)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.count_lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.follow_up_thread: threading.Thread | None = None
        self._wake: int | None = None  # eventfd the worker sleeps on
        # real-time for the kill path (see enforcer.respond.scheduling); set on the worker
        self.scheduling = WorkerPriority(realtime=realtime)
        self._kills = {p.name for p in policies.policies
                       if any(s.name == "kill" for s in p.actions)}
        self._active = (policies, policy_digest)

    def use_policies(self, policies: PolicySet, digest: str | None = None) -> None:
        """Switch to a new policy set (hot reload) without stopping: matches submitted from
        now on are decided by it; queued ones finish with the set that selected them. A
        policy that keeps its name and rate limit keeps its bucket, so a reload never
        refills a rate limit."""
        buckets = {}
        for p in policies.policies:
            if not p.rate_limit:
                continue
            rate = p.rate_limit
            old = self.buckets.get(p.name)
            if old is not None and (old.capacity, old.refill) == (float(rate.burst),
                                                                  rate.max / rate.per):
                continue
            buckets[p.name] = TokenBucket(rate.max, rate.per, rate.burst, self.clock)
        kills = {p.name for p in policies.policies if any(s.name == "kill" for s in p.actions)}
        # Buckets first (queued matches of a removed policy keep theirs), then the one
        # (policies, digest) pair that submit() reads.
        self.buckets = {**self.buckets, **buckets}
        self._kills = self._kills | kills
        self._active = (policies, digest)
        self.policies, self.policy_digest = policies, digest
        self._kills = kills

    # -- detection thread ------------------------------------------------------------------

    def submit(self, alert: Alert, active: tuple[PolicySet, str | None] | None = None) -> bool:
        """Hand an alert over. Unmatched alerts cost one policy scan; a match never waits
        for its responses, except that a kill that comes first is let through (at most
        KILL_HANDOFF_S, see `_hand_over`).

        `active` is the (policies, digest) pair to decide with, when the caller judged the
        event with a rules set whose policies must answer it (hot reload); by default the
        responder's own current set. Returns whether any policy matched."""
        policy_set, digest = active if active is not None else self._active
        policies = policy_set.select(alert)
        if not policies:
            return False
        job = _Job(alert, policies, new_match_id(), None, digest)
        self._admit(job)
        acting = [p for p in policies if p.name not in job.refused]
        process: Any = None
        if any(p.name in self._kills for p in acting):
            process = _pin_process(alert)
        job.process = process
        if acting and not any(p.name in self._kills for p in acting):
            # nothing to kill: the whole match is the slow lane's, never the kill lane's
            # (a match that every policy refused is only audit records: the kill lane's)
            self.slow.put((tuple(p.name for p in policies), job.workload[-1:]), job,
                          importance([s.name for p in acting for s in p.actions]))
            return True
        if process is not None and any(p.actions and p.actions[0].name == "kill"
                                       for p in acting):
            job.signalled = threading.Event()
        try:
            self.queue.put_nowait(job)
            self._wake_worker()
            self._hand_over(job)
        except queue.Full:
            _close(process)
            self._count("match", "dropped")
            self._record(AuditRecord(
                kind=DROP, match_id=job.match_id, outcome="dropped", rule=alert.rule,
                priority=alert.priority.display, trace_id=alert.trace_id,
                reason="responder queue full", event_time_ns=alert.time_ns,
                policy_digest=digest,
                detail={"policies": [p.name for p in policies],
                        "queue_size": self.queue.maxsize}))
        return True

    def _admit(self, job: _Job) -> None:
        """Admission, in memory: rate limit, then the blast-radius breaker (a policy that
        acts for real and can mutate), then the repeat count for escalation."""
        job.workload = alert_workload(job.alert)
        for policy in job.policies:
            acting = policy.destructive and not (self.dry_run or policy.dry_run)
            limits = self.breaker_limits(policy)
            if acting and not self.blast_radius.would_admit(policy.name, job.workload,
                                                            limits):
                verdict = self.blast_radius.admit(policy.name, job.workload, limits)
                job.refused[policy.name] = (SUSPENDED_OUTCOME, verdict.reason, verdict)
                continue
            bucket = self.buckets.get(policy.name)
            if bucket is not None and not bucket.take():
                rate = policy.rate_limit
                job.refused[policy.name] = (RATE_LIMITED, f"rate limit {rate.max} per "
                                            f"{rate.per:g}s (burst {rate.burst}) reached",
                                            None)
                continue
            if acting:
                verdict = self.blast_radius.admit(policy.name, job.workload, limits)
                if not verdict.admitted:
                    job.refused[policy.name] = (SUSPENDED_OUTCOME, verdict.reason, verdict)
                    continue
            if policy.escalate is not None and self.repeats.count(
                    policy.name, job.workload, policy.escalate):
                job.escalate.add(policy.name)

    def breaker_limits(self, policy: Policy) -> Any:
        """The policy's blast-radius limits: its own `breaker`, else the agent's."""
        defaults = self.blast_radius.defaults
        return policy.breaker.resolve(defaults) if policy.breaker else defaults

    def admits_in_kernel(self, rule: str, get: Callable[[str], Any]) -> bool:
        """Whether the kernel may kill for `rule` a process with these fields: some acting
        policy with an in_kernel kill for the rule would answer its workload now (its
        breaker admits it), and it is not in a protected namespace. Called by the in-kernel
        kill's arming (enforcer.kernel.arming), on the agent's loop; nothing is recorded."""
        namespace = get("k8s.ns.name")
        if namespace and namespace in self.guards.protected:
            return False
        container = get("container.id")
        if container not in (None, "", "host") and get("container.name") is None:
            # its metadata (namespace) is not known yet: the guard cannot be checked, so
            # the kernel waits (the process is armed again when the metadata arrives)
            return False
        workload = workload_of(get)
        for policy in self._active[0].policies:
            if not policy.enabled or policy.dry_run or self.dry_run or \
                    rule not in policy.match.rules:
                continue
            if not any(s.name == "kill" and getattr(s.action.params, "in_kernel", False)
                       for s in policy.actions):
                continue
            if self.blast_radius.would_admit(policy.name, workload,
                                             self.breaker_limits(policy)):
                return True
        return False

    def kernel_generation(self) -> int:
        """Changes when `admits_in_kernel` may answer otherwise (breakers tripped, resumed,
        half-open after their cool-off, or a new workload counted)."""
        return self.blast_radius.tick()

    def resume(self, policy: str) -> str | None:
        """Lift a policy's suspension now (`enforcer policies resume`): the state it was in,
        or None when no such policy has a breaker. Audited."""
        before = self.blast_radius.resume(policy)
        if before is not None:
            self._record(AuditRecord(kind=BREAKER, match_id=new_match_id(), outcome="resumed",
                                     policy=policy, reason=f"resumed by command (was "
                                                           f"{before})"))
        return before

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Responder:
        if self.thread is None:
            self._stopping = False
            shorten_switch_interval()
            if self._wake is None:
                # closed with the responder, never before: a late submit() must not write
                # to a descriptor number reused by another file
                self._wake = os.eventfd(0, os.EFD_CLOEXEC)
                weakref.finalize(self, os.close, self._wake)
            # started here, not from the worker: a thread inherits its creator's real-time
            # policy, and uploads must not run at it
            self.follow_up_thread = threading.Thread(target=self._run_follow_ups,
                                                     name="enforcer-follow-ups", daemon=True)
            self.follow_up_thread.start()
            self.slow.start()
            self.thread = threading.Thread(target=self._run, name="enforcer-responder",
                                           daemon=True)
            self.thread.start()
            if self.control_socket is not None and self.control is None:
                from enforcer.respond.control import ControlServer  # noqa: PLC0415

                try:
                    self.control = ControlServer(self.control_socket, self).start()
                except OSError as exc:
                    print(f"enforcer: warning: cannot serve the control socket "
                          f"{self.control_socket}: {exc}; `enforcer policies resume` will "
                          "not reach this agent (choose --control-socket)", file=sys.stderr)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish queued matches (up to `timeout`), then their follow-ups (up to `timeout`
        more: their retries are bounded), then stop the threads."""
        if self.control is not None:
            self.control.stop()
            self.control = None
        if self.thread is None:
            return
        for work, thread in ((self.queue, self.thread),
                             (self.follow_ups, self.follow_up_thread)):
            if work is self.follow_ups:
                self.slow.stop(timeout)  # after the worker: it queued the slow lane's work
                for item, why in self.slow.take_all():  # what it had no time for
                    self._slow_dropped(item, why or "the agent stopped before answering it "
                                                    f"(within {timeout:g}s)")
            try:
                work.put(_STOP, timeout=timeout)
            except queue.Full:
                pass
            if work is self.queue:
                self._wake_worker()
            if thread is not None:
                thread.join(timeout)
        if self.follow_up_thread is not None and self.follow_up_thread.is_alive():
            print(f"enforcer: snapshot uploads still running {timeout:g}s after stop: their "
                  "outcome is not audited (the local archives are kept)", file=sys.stderr)
        # Matches still queued (the worker ran out of time, or they came after the stop)
        # are recorded as dropped, so that the audit log accounts for every match.
        self._stopping = True
        self._drop_queued(f"the agent stopped before answering it (within {timeout:g}s)")
        self.thread = self.follow_up_thread = None

    def _drop_queued(self, reason: str) -> None:
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return
            try:
                if job is not _STOP:
                    self._drop(job, reason)
            finally:
                self.queue.task_done()

    def _drop(self, job: _Job, reason: str) -> None:
        _close(job.process)
        if job.signalled is not None:
            job.signalled.set()
        self._count("match", "dropped")
        alert = job.alert
        self._record(AuditRecord(
            kind=DROP, match_id=job.match_id, outcome="dropped", rule=alert.rule,
            priority=alert.priority.display, trace_id=alert.trace_id, reason=reason,
            event_time_ns=alert.time_ns, policy_digest=job.digest,
            detail={"policies": [p.name for p in job.policies]}))

    def drain(self) -> None:
        """Block until every submitted match has been handled, follow-ups (uploads)
        included (tests, replay)."""
        while True:  # the slow lane may hand a deferred kill back to the kill lane
            self.queue.join()
            self.slow.join()
            if not self.queue.unfinished_tasks:
                break
        self.follow_ups.join()  # every follow-up was queued before its action finished

    def stats(self) -> dict[str, Any]:
        """Counts for the stop summary: matches, drops, decisions, and actions by outcome."""
        with self.count_lock:
            counts = dict(self.counts)
        actions: dict[str, dict[str, int]] = {}
        decisions: dict[str, int] = {}
        for (kind, outcome), n in counts.items():
            if kind == "match":
                continue
            if kind == "decision":
                decisions[outcome] = n
            else:
                actions.setdefault(kind, {})[outcome] = n
        return {"matches": counts.get(("match", "queued"), 0),
                "dropped": counts.get(("match", "dropped"), 0),
                "decisions": decisions, "actions": actions,
                "suspended": [b["policy"] for b in self.blast_radius.describe()
                              if b["state"] != "closed"],
                "worker": self.scheduling.describe()}

    def summary(self) -> str:
        """One line for the stop summary: matches, drops, decisions, actions by outcome."""
        stats = self.stats()
        parts = [f"{stats['matches']} matches answered", f"{stats['dropped']} dropped"]
        parts += [f"{n} {what}" for what, n in sorted(stats["decisions"].items())]
        for action, outcomes in sorted(stats["actions"].items()):
            detail = ", ".join(f"{o} {n}" for o, n in sorted(outcomes.items()))
            parts.append(f"{action}: {detail}")
        if stats["suspended"]:
            parts.append("policies suspended or half-open (blast radius): "
                         + ", ".join(stats["suspended"]))
        return "responses: " + "; ".join(parts)

    # -- worker ----------------------------------------------------------------------------

    def _wake_worker(self) -> None:
        """Wake the worker. Through an eventfd rather than the queue's condition variable:
        os.eventfd_write gives the GIL up *before* the system call that wakes the worker,
        so the worker (real-time, it runs at once, often on this very CPU) finds the GIL
        free instead of waiting for this thread, which it has just preempted, to be
        scheduled again and let go of it."""
        wake = self._wake
        if wake is not None:
            os.eventfd_write(wake, 1)

    def _hand_over(self, job: _Job) -> None:
        """For a match whose kill comes first: wait (at most KILL_HANDOFF_S, without the
        GIL) until the worker has sent the signal. Otherwise this thread, busy with the next
        events, takes the GIL back each time the worker makes a system call, and the worker
        waits for it a switch interval each time, or for as long as this thread is preempted
        while holding it (measured: tens of ms on a loaded node). A kill costs well under a
        millisecond; detection resumes as soon as it is sent."""
        if job.signalled is not None and self.thread is not None:
            job.signalled.wait(KILL_HANDOFF_S)

    def _next_job(self) -> Any:
        while True:
            try:
                return self.queue.get_nowait()
            except queue.Empty:
                if self._wake is None:
                    return self.queue.get()
                os.eventfd_read(self._wake)  # without the GIL; a stale count: look again

    def _run(self) -> None:
        self.scheduling.raise_()
        while True:
            job = self._next_job()
            try:
                if job is _STOP:
                    return
                if isinstance(job, _Resume):
                    self._resume(job)
                elif self._stopping:  # stop() gave up waiting: account for it, do not act
                    self._drop(job, "the agent stopped before answering it")
                else:
                    self._handle(job)
            except Exception as exc:  # never let one match kill the worker
                print(f"enforcer: responder error: {exc!r}", file=sys.stderr)
            finally:
                self.scheduling.restore()  # after a kill: real-time again, to wait
                self.queue.task_done()

    def _handle(self, job: _Job, inline: bool = False) -> None:
        alert = job.alert
        self._count("match", "queued")
        try:
            # where the time went: event -> submit (detection), submit -> here (queue)
            now = time.time_ns()
            job.held.append(self._base(job, MATCH, "matched",
                                    detail={"policies": [p.name for p in job.policies],
                                            "detection_ms": (job.received_ns - alert.time_ns)
                                            / 1e6,
                                            "queue_ms": (now - job.received_ns) / 1e6},
                                    duration_ns=now - alert.time_ns))
            for policy in job.policies:
                self._answer(job, policy, inline)
        finally:
            if job.signalled is not None:
                job.signalled.set()
            self._write_held(job)
            if not job.deferred:
                _close(job.process)

    def _resume(self, item: _Resume) -> None:
        """On the kill lane: a deferred kill and what follows it."""
        job = item.job
        try:
            self._steps(job, item.policy, item.steps, item.start, item.dry_run, item.results)
        finally:
            job.deferred -= 1
            if not job.deferred:
                _close(job.process)

    # The match record and a policy's "act" decision are held (built, with their times, but
    # not written) until the first action: a kill is signalled first and they are written
    # just after, in the same order, before the kill's own record; any other action writes
    # them before it starts. A write is a system call that gives the GIL up, and in the live
    # agent each record also wakes the tracing and store threads, which then compete with
    # the worker for the GIL: none of that before the signal.

    def _write_held(self, job: _Job) -> None:
        held, job.held = job.held, []
        for rec in held:
            self._record(rec)

    def _emit(self, job: _Job, rec: AuditRecord) -> None:
        """Write `rec` after the match's held records (order preserved)."""
        self._write_held(job)
        self._record(rec)

    def _answer(self, job: _Job, policy: Policy, inline: bool = False) -> None:
        refused = job.refused.get(policy.name)
        if refused is not None:
            outcome, reason, verdict = refused
            self._count("decision", outcome)
            self._emit(job, self._base(job, DECISION, outcome, policy=policy.name,
                                       reason=reason, detail={"workload": list(job.workload)}
                                       if outcome == SUSPENDED_OUTCOME else None))
            if verdict is not None and verdict.tripped:
                self._suspended(job, policy, verdict)
            return
        dry_run = self.dry_run or policy.dry_run
        why = "global dry-run" if self.dry_run else "policy dry_run" if policy.dry_run else None
        self._count("decision", "act")
        steps = list(policy.actions)
        escalated = policy.name in job.escalate and policy.escalate is not None
        if escalated:
            steps += list(policy.escalate.actions)  # type: ignore[union-attr]
        detail: dict[str, Any] = {"actions": [s.name for s in steps],
                                  "workload": list(job.workload)}
        if escalated:
            detail["escalated"] = {"after": policy.escalate.after,  # type: ignore[union-attr]
                                   "within_s": policy.escalate.within,  # type: ignore[union-attr]
                                   "actions": [s.name for s in policy.escalate.actions]}  # type: ignore[union-attr]
        job.held.append(self._base(job, DECISION, "act", policy=policy.name, dry_run=dry_run,
                                   reason=why, detail=detail))
        if inline:  # on the slow lane already (a match without kills)
            self._run_slow(_SlowJob(job, policy, list(enumerate(steps)), dry_run, {}))
        else:
            self._steps(job, policy, steps, 0, dry_run, {})

    def _steps(self, job: _Job, policy: Policy, steps: list[ActionStep], start: int,
               dry_run: bool, results: dict[str, Any]) -> None:
        """Run steps[start:] from the kill lane: kills here, at once; anything else on the
        slow lane, so that no snapshot, notify or Kubernetes call delays a kill. What a
        policy puts before a kill runs first, on the slow lane, and the kill follows when it
        is done — or after `pre_kill_timeout`, whichever comes first (audited)."""
        key = (policy.name, job.workload[-1:] or ("unknown",))
        index = start
        while index < len(steps):
            step = steps[index]
            if step.name != "kill":
                nxt = next((i for i in range(index, len(steps)) if steps[i].name == "kill"),
                           None)
                batch = [(i, steps[i]) for i in range(index, nxt if nxt is not None
                                                      else len(steps))]
                self._write_held(job)
                then = None
                if nxt is not None:
                    then = _Resume(job, policy, steps, nxt, dry_run, results,
                                   threading.Lock())
                    job.deferred += 1
                    then.timer = threading.Timer(self.pre_kill_timeout, self._pre_kill_late,
                                                 (then, batch))
                    then.timer.daemon = True
                    then.timer.start()
                if not self.slow.put(key, _SlowJob(job, policy, batch, dry_run, results,
                                                   then),
                                     importance([s.name for _, s in batch])) \
                        and then is not None:
                    self._queue_resume(then)  # dropped: the kill goes ahead now
                return
            with self._scheduled(step):
                status = self._run_action(job, policy, index, step, dry_run, results)
            if status == FAILED and policy.on_failure == "stop":
                self._emit(job, self._base(job, DECISION, "stopped", policy=policy.name,
                                           reason=f"{step.name} failed and on_failure is "
                                                  "stop"))
                return
            index += 1

    def _queue_resume(self, item: _Resume) -> bool:
        """Put a deferred kill on the kill lane, once (done, late or dropped)."""
        with item.lock:
            if item.queued:
                return False
            item.queued = True
        if item.timer is not None:
            item.timer.cancel()
        self.queue.put(item)
        self._wake_worker()
        return True

    def _pre_kill_late(self, item: _Resume, batch: list[tuple[int, ActionStep]]) -> None:
        """The actions before the kill are not done within the bound: the kill goes ahead."""
        if self._queue_resume(item):
            self._record(self._base(item.job, DECISION, "kill-not-waiting",
                                    policy=item.policy.name,
                                    reason=f"{', '.join(s.name for _, s in batch)} not done "
                                           f"within {self.pre_kill_timeout:g}s: the kill goes "
                                           "ahead (they go on)"))

    def _run_slow(self, item: _SlowJob | _Job) -> None:
        """On a slow-lane thread: a whole match without kills, or a policy's remaining
        actions, in order. A process handle pinned at submit belongs to the kill lane:
        actions here open their own."""
        if isinstance(item, _Job):
            self._handle(item, inline=True)
            return
        try:
            for index, step in item.steps:
                status = self._run_action(item.job, item.policy, index, step, item.dry_run,
                                          item.results, process=None)
                if status == FAILED and item.policy.on_failure == "stop":
                    self._emit(item.job, self._base(item.job, DECISION, "stopped",
                                                    policy=item.policy.name,
                                                    reason=f"{step.name} failed and "
                                                           "on_failure is stop"))
                    if item.then is not None and item.then.timer is not None:
                        item.then.timer.cancel()
                    item.then = None  # the kill is not run, as on the kill lane
                    item.job.deferred -= 1
                    if not item.job.deferred:
                        _close(item.job.process)
                    break
        finally:
            if item.then is not None:
                self._queue_resume(item.then)

    def _slow_dropped(self, item: _SlowJob | _Job, reason: str) -> None:
        """The slow lane had no room: each action not run is audited as dropped."""
        if isinstance(item, _Job):
            self._count("match", "dropped")
            self._record(self._base(item, DROP, "dropped", reason=reason,
                                    detail={"policies": [p.name for p in item.policies]}))
            return
        for index, step in item.steps:
            rec = self._base(item.job, ACTION, "dropped", policy=item.policy.name,
                             action=step.name, dry_run=item.dry_run, reason=reason)
            rec.index = index
            self._finish(rec, rec.start_ns, item.job.alert)
        if item.then is not None:
            self._queue_resume(item.then)  # what waited for them goes ahead now

    def _scheduled(self, step: ActionStep) -> AbstractContextManager[None]:
        """A kill runs at the worker's real-time priority; any other action (compression,
        network calls) with ordinary scheduling, so that it never holds a CPU for long."""
        if step.name == "kill":
            return contextlib.nullcontext()
        return self.scheduling.ordinary()

    def _run_action(self, job: _Job, policy: Policy, index: int, step: ActionStep,
                    dry_run: bool, results: dict[str, Any], process: Any = _STOP) -> str:
        action = step.action
        if step.name != "kill":  # only a kill goes before the match's records
            self._write_held(job)
        started = time.time_ns()
        rec = self._base(job, ACTION, "", policy=policy.name, action=step.name,
                         dry_run=dry_run)
        rec.index = index
        rec.start_ns = started
        event = job.alert.event or {}
        plan: Plan | None = None
        follow_up: FollowUp | None = None
        log = RetryLog()
        claimed: Any = None  # a cooldown claimed for this action, released unless it acts
        try:
            missing = action.missing_fields(event)
            if missing:
                raise MissingFields(missing)
            key = (policy.name, index) + tuple(str(event.get(f)) for f in action.target_fields)
            if policy.cooldown:
                left = self.cooldowns.claim(key, policy.cooldown)
                if left:
                    rec.outcome, rec.reason = COOLDOWN, f"same target acted on; {left:.1f}s left"
                    return self._finish(rec, started, job.alert, job)
                claimed = key
            if dry_run and self.received_alerts and action.acts_in_dry_run:
                rec.outcome, rec.reason = SKIPPED, (
                    f"dry-run of a received alert: {step.name} is not sent (received alerts "
                    "notify only from an authenticated intake under a live policy)")
                return self._finish(rec, started, job.alert, job)
            context = ActionContext(alert=job.alert, policy=policy.name,
                                    node_name=self.node_name, guards=self.guards,
                                    services=self.services,
                                    process=job.process if process is _STOP else process,
                                    state_dir=self.state_dir, snapshot_dir=self.snapshot_dir,
                                    results=results)
            plan = call_with_retries(lambda: action.plan(context), self.retry, log)
            rec.target, rec.render = plan.target, plan.render
            rec.dry_run = dry_run
            outcome = call_with_retries(lambda: action.apply(plan, dry_run), self.retry, log)
            if step.name == "kill":
                # the signal is sent: the rest of the match needs no priority, and the
                # dying process and the event loop may have this CPU
                self.scheduling.lower()
                if job.signalled is not None:
                    job.signalled.set()  # detection may go on
            follow_up = outcome.follow_up
            rec.outcome, rec.message = outcome.status, outcome.message
            rec.detail = outcome.detail or None
            rec.retries = log.retries
            if log.retries:
                rec.detail = dict(rec.detail or {}, retry_waits=log.waits,
                                  retry_errors=log.errors)
            if claimed is not None and outcome.status in (DONE, DRY_RUN):
                claimed = None  # acted: the cooldown stands
        except MissingFields as exc:
            rec.outcome, rec.reason = SKIPPED, str(exc)
            rec.detail = {"missing_fields": exc.fields}
        except Refused as exc:
            rec.outcome, rec.guard, rec.reason = SUPPRESSED, exc.guard, str(exc)
        except AlreadyDone as exc:
            rec.outcome, rec.message = NOOP, str(exc)
        except ActionError as exc:
            rec.outcome, rec.error = FAILED, str(exc)
            # what was achieved before the failure (e.g. a snapshot kept whose upload failed)
            rec.detail = getattr(exc, "detail", None) or rec.detail
            if log.retries:
                rec.retries = log.retries
                rec.detail = dict(rec.detail or {}, retry_waits=log.waits,
                                  retry_errors=log.errors)
        except Exception as exc:  # an action bug must not stop the responder
            rec.outcome, rec.error = FAILED, f"{type(exc).__name__}: {exc}"
        finally:
            if plan is not None:
                action.release(plan)
            if claimed is not None:
                self.cooldowns.release(claimed)
        results[step.name] = rec.outcome
        if follow_up is not None:
            rec.pending = f"{step.name}.{follow_up.name}"
        status = self._finish(rec, started, job.alert, job)
        if follow_up is not None:  # after its action's record: that record comes first
            self._queue_follow_up(_FollowUpJob(job, policy, index, rec.pending or "",
                                               follow_up, rec.target, rec.render))
        return status

    # -- follow-ups (background work of an action: a snapshot's upload) ---------------------

    def _queue_follow_up(self, item: _FollowUpJob) -> None:
        try:
            self.follow_ups.put_nowait(item)
        except queue.Full:
            rec = self._follow_up_record(item)
            rec.outcome, rec.error = FAILED, (f"not run: {self.follow_ups.maxsize} follow-ups "
                                              "already waiting")
            self._finish(rec, rec.start_ns, item.job.alert)

    def _run_follow_ups(self) -> None:
        while True:
            item = self.follow_ups.get()
            try:
                if item is _STOP:
                    return
                self._follow_up(item)
            except Exception as exc:  # never let one upload stop the others
                print(f"enforcer: responder follow-up error: {exc!r}", file=sys.stderr)
            finally:
                self.follow_ups.task_done()

    def _follow_up(self, item: _FollowUpJob) -> None:
        rec = self._follow_up_record(item)
        started = rec.start_ns
        log = RetryLog()
        try:
            outcome = call_with_retries(item.follow_up.run, self.retry, log)
            rec.outcome, rec.message = outcome.status, outcome.message
            rec.detail = outcome.detail or None
        except ActionError as exc:
            rec.outcome, rec.error = FAILED, str(exc)
            rec.detail = getattr(exc, "detail", None)
        except Exception as exc:  # a bug in the follow-up must not stop the thread
            rec.outcome, rec.error = FAILED, f"{type(exc).__name__}: {exc}"
        if log.retries:
            rec.retries = log.retries
            rec.detail = dict(rec.detail or {}, retry_waits=log.waits, retry_errors=log.errors)
        self._finish(rec, started, item.job.alert)

    def _follow_up_record(self, item: _FollowUpJob) -> AuditRecord:
        rec = self._base(item.job, ACTION, "", policy=item.policy.name, action=item.action,
                         dry_run=False, target=item.target, render=item.render)
        rec.index = item.index
        return rec

    def _finish(self, rec: AuditRecord, started: int, alert: Alert,
                job: _Job | None = None) -> str:
        rec.duration_ns = time.time_ns() - started
        self._count(rec.action or "?", rec.outcome)
        if job is not None:
            self._write_held(job)
        self._record(rec)
        if self.on_outcome is not None and not (rec.dry_run and self.received_alerts):
            try:
                self.on_outcome(alert, rec)
            except Exception as exc:
                print(f"enforcer: outcome hook failed: {exc!r}", file=sys.stderr)
        return rec.outcome

    def _suspended(self, job: _Job, policy: Policy, verdict: Admission) -> None:
        """The breaker tripped on this match: audit, critical alert, Kubernetes Event (on
        the pod whose match tripped it, when it is one)."""
        limits = self.breaker_limits(policy)
        message = (f"{verdict.reason} (tripped by workload {describe(job.workload)}, rule "
                   f"{job.alert.rule!r})")
        rec = self._base(job, BREAKER, "tripped", policy=policy.name, reason=message,
                         action="policy-suspended",
                         detail={"workloads": limits.workloads, "window_s": limits.window,
                                 "cooloff_s": limits.cooloff,
                                 "workload": list(job.workload)})
        self._emit(job, rec)
        alert = Alert(rule=BREAKER_RULE, priority=Priority.CRITICAL, output=message,
                      output_fields={"policy.name": policy.name,
                                     "breaker.workloads": limits.workloads,
                                     "breaker.window": limits.window,
                                     "breaker.cooloff": limits.cooloff},
                      time_ns=time.time_ns(), source="enforcer", tags=("enforcer",),
                      hostname=self.hostname)
        try:
            self.on_critical(alert)
        except Exception as exc:
            print(f"enforcer: critical alert output failed: {exc!r}", file=sys.stderr)
        if self.on_outcome is not None:
            event_rec = self._base(job, ACTION, SUPPRESSED, policy=policy.name,
                                   action="policy-suspended", reason=message)
            try:
                self.on_outcome(job.alert, event_rec)
            except Exception as exc:
                print(f"enforcer: outcome hook failed: {exc!r}", file=sys.stderr)

    def _base(self, job: _Job, kind: str, outcome: str, **extra: Any) -> AuditRecord:
        alert = job.alert
        return AuditRecord(kind=kind, match_id=job.match_id, outcome=outcome, rule=alert.rule,
                           priority=alert.priority.display, trace_id=alert.trace_id,
                           event_time_ns=alert.time_ns, policy_digest=job.digest, **extra)

    def _record(self, rec: AuditRecord) -> None:
        try:
            self.audit.record(rec)
        except Exception as exc:
            print(f"enforcer: audit failed: {exc!r}", file=sys.stderr)

    def _count(self, kind: str, outcome: str) -> None:
        with self.count_lock:
            self.counts[(kind, outcome)] += 1


def _pin_process(alert: Alert) -> Any:
    """Open the pidfd now, on the detection thread: a ProcessHandle, or the reason not."""
    event = alert.event
    if event is None:
        return None
    pid = event.get("proc.pid")
    if pid in (None, ""):
        return None
    try:
        return ProcessHandle.open(int(pid), expected_start(event))
    except (ProcessGone, IdentityMismatch) as exc:
        return exc
    except (OSError, ValueError):
        return None


def _close(process: Any) -> None:
    if isinstance(process, ProcessHandle):
        process.close()


def _print_critical(alert: Alert) -> None:
    print(escape_control(alert.text_line), file=sys.stderr, flush=True)
