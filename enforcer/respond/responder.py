"""The responder: answers alerts with the actions of matching policies, on its own worker
thread, so that detection never waits on a response.

`submit(alert)` runs on the detection thread and only does what must happen at once: select
the matching policies (in memory), and — when a policy kills — open a pidfd on the event's
process and check its start time, so that the process is pinned before its pid can be
reused. Everything else (rate limits, guards, plans, retries, audit) runs on the worker. A
full queue drops the match, counts it and audits it. When a policy's first action is a kill,
submit() gives the worker the interpreter until the signal is sent (at most 2 ms).

Dry-run is decided here and only here: globally (`dry_run=True`), per policy, or because the
destructive-action budget is exhausted; actions receive the verdict in `apply(plan, dry_run)`.

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
from enforcer.policy.budget import Budget
from enforcer.policy.guards import Guards
from enforcer.policy.model import ActionStep, Policy, PolicySet
from enforcer.policy.ratelimit import Cooldowns, TokenBucket
from enforcer.priority import Priority
from enforcer.respond.retry import RetryLog, RetryPolicy, call_with_retries
from enforcer.respond.scheduling import WorkerPriority, shorten_switch_interval
from enforcer.respond.services import Services

BREAKER_RULE = "Enforcer response budget exhausted"
# How long submit() lets the worker have the interpreter for a kill (see `_hand_over`).
KILL_HANDOFF_S = 0.002


class _Job:
    __slots__ = ("alert", "policies", "match_id", "process", "received_ns", "digest", "held",
                 "signalled")

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
                 budget: Budget | None = None, queue_size: int = 4096,
                 services: Services | None = None, retry: RetryPolicy | None = None,
                 state_dir: str | Path = "/run/enforcer",
                 snapshot_dir: str | Path = "/var/lib/enforcer/snapshots",
                 on_critical: Callable[[Alert], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 hostname: str = "", policy_digest: str | None = None,
                 on_outcome: Callable[[Alert, AuditRecord], Any] | None = None,
                 realtime: bool = True, follow_up_queue_size: int = 256):
        self.policies = policies
        # Told of every action outcome after it is audited (Kubernetes Events); must not
        # block: it runs on the responder's threads (the worker, and the follow-up thread
        # for a snapshot's upload).
        self.on_outcome = on_outcome
        # Every alert comes from outside (the falco-http input): in dry-run nothing may
        # reach out because of it (notify, Kubernetes Events), since a received alert may be
        # unauthenticated text; it acts and notifies only when authenticated and live.
        self.received_alerts = False
        self.policy_digest = policy_digest
        self.clock = clock
        self.audit = audit
        self.dry_run = dry_run
        self.node_name = node_name
        self.guards = guards or Guards(node_name=node_name)
        self.budget = budget or Budget()
        self.services = services or Services()
        self.retry = retry or RetryPolicy()
        self.state_dir = Path(state_dir)
        self.snapshot_dir = Path(snapshot_dir)
        self.on_critical = on_critical or _print_critical
        self.hostname = hostname
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.follow_ups: queue.Queue[Any] = queue.Queue(maxsize=follow_up_queue_size)
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
        process: Any = None
        if any(p.name in self._kills for p in policies):
            process = _pin_process(alert)
        job = _Job(alert, policies, new_match_id(), process, digest)
        if process is not None and any(p.actions and p.actions[0].name == "kill"
                                       for p in policies):
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

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Responder:
        if self.thread is None:
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
            self.thread = threading.Thread(target=self._run, name="enforcer-responder",
                                           daemon=True)
            self.thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish queued matches (up to `timeout`), then their follow-ups (up to `timeout`
        more: their retries are bounded), then stop the threads."""
        if self.thread is None:
            return
        for work, thread in ((self.queue, self.thread),
                             (self.follow_ups, self.follow_up_thread)):
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
        self.thread = self.follow_up_thread = None

    def drain(self) -> None:
        """Block until every submitted match has been handled, follow-ups (uploads)
        included (tests, replay)."""
        self.queue.join()
        self.follow_ups.join()  # the worker queued every follow-up before its task_done

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
                "budget_tripped": self.budget.tripped,
                "worker": self.scheduling.describe()}

    def summary(self) -> str:
        """One line for the stop summary: matches, drops, decisions, actions by outcome."""
        stats = self.stats()
        parts = [f"{stats['matches']} matches answered", f"{stats['dropped']} dropped"]
        parts += [f"{n} {what}" for what, n in sorted(stats["decisions"].items())]
        for action, outcomes in sorted(stats["actions"].items()):
            detail = ", ".join(f"{o} {n}" for o, n in sorted(outcomes.items()))
            parts.append(f"{action}: {detail}")
        if stats["budget_tripped"]:
            parts.append("BUDGET EXHAUSTED: dry-run since")
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
                self._handle(job)
            except Exception as exc:  # never let one match kill the worker
                print(f"enforcer: responder error: {exc!r}", file=sys.stderr)
            finally:
                self.scheduling.restore()  # after a kill: real-time again, to wait
                self.queue.task_done()

    def _handle(self, job: _Job) -> None:
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
                self._answer(job, policy)
        finally:
            if job.signalled is not None:
                job.signalled.set()
            self._write_held(job)
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

    def _answer(self, job: _Job, policy: Policy) -> None:
        bucket = self.buckets.get(policy.name)
        if bucket is not None and not bucket.take():
            self._count("decision", RATE_LIMITED)
            rate = policy.rate_limit
            self._emit(job, self._base(job, DECISION, RATE_LIMITED, policy=policy.name,
                                       reason=f"rate limit {rate.max} per {rate.per:g}s "
                                              f"(burst {rate.burst}) reached"))
            return
        dry_run = self.dry_run or policy.dry_run or self.budget.tripped
        why = ("global dry-run" if self.dry_run else "policy dry_run" if policy.dry_run
               else "budget exhausted" if self.budget.tripped else None)
        self._count("decision", "act")
        job.held.append(self._base(job, DECISION, "act", policy=policy.name, dry_run=dry_run,
                                   reason=why,
                                   detail={"actions": [s.name for s in policy.actions]}))
        results: dict[str, Any] = {}
        for index, step in enumerate(policy.actions):
            with self._scheduled(step):
                status = self._run_action(job, policy, index, step, dry_run, results)
            if status == FAILED and policy.on_failure == "stop":
                self._emit(job, self._base(job, DECISION, "stopped", policy=policy.name,
                                           reason=f"{step.name} failed and on_failure is "
                                                  "stop"))
                break
            dry_run = dry_run or self.budget.tripped

    def _scheduled(self, step: ActionStep) -> AbstractContextManager[None]:
        """A kill runs at the worker's real-time priority; any other action (compression,
        network calls) with ordinary scheduling, so that it never holds a CPU for long."""
        if step.name == "kill":
            return contextlib.nullcontext()
        return self.scheduling.ordinary()

    def _run_action(self, job: _Job, policy: Policy, index: int, step: ActionStep,
                    dry_run: bool, results: dict[str, Any]) -> str:
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
        try:
            missing = action.missing_fields(event)
            if missing:
                raise MissingFields(missing)
            key = (policy.name, index) + tuple(str(event.get(f)) for f in action.target_fields)
            if policy.cooldown:
                left = self.cooldowns.active(key)
                if left:
                    rec.outcome, rec.reason = COOLDOWN, f"same target acted on; {left:.1f}s left"
                    return self._finish(rec, started, job.alert, job)
            if dry_run and self.received_alerts and action.acts_in_dry_run:
                rec.outcome, rec.reason = SKIPPED, (
                    f"dry-run of a received alert: {step.name} is not sent (received alerts "
                    "notify only from an authenticated intake under a live policy)")
                return self._finish(rec, started, job.alert, job)
            context = ActionContext(alert=job.alert, policy=policy.name,
                                    node_name=self.node_name, guards=self.guards,
                                    services=self.services, process=job.process,
                                    state_dir=self.state_dir, snapshot_dir=self.snapshot_dir,
                                    results=results)
            plan = call_with_retries(lambda: action.plan(context), self.retry, log)
            rec.target, rec.render = plan.target, plan.render
            if action.destructive and not dry_run and not self.budget.consume():
                dry_run = True
                rec.reason = "destructive-action budget exhausted: switched to dry-run"
                self._trip(job, step.name)
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
            if policy.cooldown and outcome.status in (DONE, DRY_RUN):
                self.cooldowns.start(key, policy.cooldown)
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

    def _trip(self, job: _Job, action: str) -> None:
        with self.count_lock:
            first = not getattr(self, "_tripped_reported", False)
            self._tripped_reported = True
        if not first:
            return
        message = (f"destructive-action budget exhausted ({self.budget.tripped_reason}); "
                   f"the agent is now in dry-run until restarted (last: {action} for rule "
                   f"{job.alert.rule!r})")
        self._emit(job, self._base(job, BREAKER, "tripped", reason=message, dry_run=True,
                                   detail={"limit": self.budget.limit,
                                           "window_s": self.budget.window}))
        alert = Alert(rule=BREAKER_RULE, priority=Priority.CRITICAL, output=message,
                      output_fields={"budget.limit": self.budget.limit,
                                     "budget.window": self.budget.window},
                      time_ns=time.time_ns(), source="enforcer", tags=("enforcer",),
                      hostname=self.hostname)
        try:
            self.on_critical(alert)
        except Exception as exc:
            print(f"enforcer: critical alert output failed: {exc!r}", file=sys.stderr)

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
    print(alert.text_line, file=sys.stderr, flush=True)
