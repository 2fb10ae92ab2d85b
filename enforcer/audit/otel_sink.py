"""An audit sink that writes the durable record first, then turns it into spans.

It wraps the responder's audit sink (the JSONL log): `record(rec)` hands the record to the
inner sink — written and flushed before anything else happens — and only then makes or
ends OpenTelemetry spans, which merely enqueue for export. A collector that is down, slow
or refusing therefore costs no record and no time.

Records of one match (same `match_id`) become one trace, whose id is the alert's
`trace_id` (stamped by `Tracer.stamp` on the detection thread, so the alert's outputs
carry it too; a record without one gets the trace's id before it is written):

    match record     -> root span `enforcer.match`, from the event's time
    decision record  -> `enforcer.decision` child of the root, one per policy
    action record    -> `enforcer.action` child of its policy's decision, timed by the
                        record's start and duration; failures get record_exception
    breaker record   -> an event on the root span
    drop record      -> a complete one-span trace (the match was never handled)

A trace ends when every policy listed in the match record has its decision and, for a
policy that acts, every listed action has its record (or the policy was stopped); an action
record with `pending` (a snapshot whose upload runs in the background) is followed by the
follow-up's own action record (`snapshot.upload`), a span of the same policy, and the trace
waits for it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

from enforcer.audit.record import ACTION, BREAKER, DECISION, DROP, MATCH
from enforcer.audit.tracing import DecisionSpan, DetectionTrace, Tracer
from enforcer.errors import ActionError

log = logging.getLogger(__name__)

ACT = "act"            # the decision to run a policy's actions
STOPPED = "stopped"    # a decision record: on_failure stop ended the policy early
FAILED = "failed"
# Open traces older than this are ended when the next match arrives, so a responder that
# dies mid-match cannot leak spans forever.
STALE_NS = 300 * 1_000_000_000
_STOP = object()


class Sink(Protocol):
    def record(self, rec: Any) -> None: ...

    def close(self) -> None: ...


@dataclass
class _Policy:
    decision: DecisionSpan | None = None
    expected: int | None = None  # actions still to come; None until decided
    last_end_ns: int = 0
    done: bool = False


@dataclass
class _Open:
    trace: DetectionTrace
    policies: dict[str, _Policy]
    opened_ns: int
    last_end_ns: int = 0
    pending: list[tuple[str, int]] = field(default_factory=list)


class TracingAudit:
    """`AuditSink` that records into `inner`, then traces (see the module docstring).

    Spans are made on a thread of their own, fed by a bounded queue: the responder's thread
    only writes the record and enqueues it, so building spans never delays the next action.
    When that queue is full (a burst far beyond what tracing can follow) the record is still
    written and only its span is skipped, counted in `span_drops`.
    """

    def __init__(self, inner: Sink, tracer: Tracer, queue_size: int = 10_000):
        self.inner = inner
        self.tracer = tracer
        self._open: dict[str, _Open] = {}
        self._lock = threading.Lock()
        # match_id -> trace id for records whose alert was not stamped (see record())
        self._ids: OrderedDict[str, str | None] = OrderedDict()
        self.span_errors = 0
        self.span_drops = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        if tracer.enabled:
            self._thread = threading.Thread(target=self._work, name="enforcer-spans",
                                            daemon=True)
            self._thread.start()

    def record(self, rec: Any) -> None:
        if self.tracer.enabled and getattr(rec, "trace_id", None) is None:
            rec.trace_id = self._trace_id_for(rec)
        self.inner.record(rec)  # the durable record, before any tracing
        if self._thread is None:
            return
        try:
            self._queue.put_nowait(rec)
        except queue.Full:
            self.span_drops += 1

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record handed over so far has its spans (tests, shutdown)."""
        if self._thread is None:
            return True
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """End the spans of matches still open, then close the inner sink."""
        if self._thread is not None:
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                pass
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            for match_id in list(self._open):
                self._finish(match_id)
        self.inner.close()

    def _work(self) -> None:
        while True:
            rec = self._queue.get()
            if rec is _STOP:
                return
            if isinstance(rec, threading.Event):
                rec.set()
                continue
            try:
                with self._lock:
                    self._trace(rec)
            except Exception as exc:  # noqa: BLE001 - tracing must never break auditing
                self.span_errors += 1
                log.warning("tracing: could not make a span for a %s record: %r",
                            getattr(rec, "kind", "?"), exc)

    # --- record -> spans -------------------------------------------------------------------

    def _trace_id_for(self, rec: Any) -> str | None:
        # Runs on the caller's thread, before the record is written: the match record's id
        # is remembered here for the records of the same match that follow it.
        with self._lock:
            if rec.match_id in self._ids:
                return self._ids[rec.match_id]
            if rec.kind not in (MATCH, DROP):
                return None
            trace_id = self.tracer.new_trace_id()
            self._ids[rec.match_id] = trace_id
            while len(self._ids) > 4096:
                self._ids.popitem(last=False)
            return trace_id

    def _trace(self, rec: Any) -> None:
        kind = rec.kind
        if kind == MATCH:
            self._end_stale()
            self._begin(rec)
            return
        if kind == DROP:
            trace = self._root(rec)
            trace.end(matched_policies=0, end_ns=_record_end(rec))
            return
        opened = self._open.get(rec.match_id)
        if opened is None:
            return  # its match record predates us (or was for another sink): nothing to hang
        if kind == DECISION:
            self._decision(opened, rec)
        elif kind == ACTION:
            self._action(opened, rec)
        elif kind == BREAKER:
            opened.trace.add_event("enforcer.breaker", {
                "enforcer.outcome": rec.outcome, "enforcer.reason": rec.reason or ""})
        if all(p.done for p in opened.policies.values()):
            self._finish(rec.match_id)

    def _root(self, rec: Any) -> DetectionTrace:
        detail = rec.detail or {}
        return self.tracer.begin_record(
            rule=rec.rule or "", priority=rec.priority or "", trace_id=rec.trace_id,
            start_ns=_root_start(rec), attributes={
                "enforcer.match_id": rec.match_id,
                "enforcer.outcome": rec.outcome,
                "enforcer.reason": rec.reason or "",
                "enforcer.policies": list(detail.get("policies", [])),
                # the rules + policies set that decided: names the commit it came from
                "enforcer.policy_digest": getattr(rec, "policy_digest", None) or "",
            })

    def _begin(self, rec: Any) -> None:
        detail = rec.detail or {}
        names = [str(p) for p in detail.get("policies", [])]
        trace = self._root(rec)
        self._open[rec.match_id] = _Open(trace, {n: _Policy() for n in names},
                                         time.monotonic_ns(), _record_end(rec))
        if not names:
            self._finish(rec.match_id)

    def _decision(self, opened: _Open, rec: Any) -> None:
        name = rec.policy or "?"
        policy = opened.policies.setdefault(name, _Policy())
        end = _record_end(rec)
        if rec.outcome == STOPPED:
            if policy.decision is not None:
                policy.decision.set_attribute("enforcer.stopped_reason", rec.reason or "")
            policy.expected = 0
        else:
            actions = [str(a) for a in (rec.detail or {}).get("actions", [])]
            policy.decision = opened.trace.decision(
                name, rec.outcome, dry_run=bool(rec.dry_run), actions=actions,
                rate_limited=rec.outcome == "rate-limited", reason=rec.reason or "",
                start_ns=rec.start_ns)
            policy.expected = len(actions) if rec.outcome == ACT else 0
        policy.last_end_ns = max(policy.last_end_ns, end)
        self._maybe_close_policy(policy)

    def _action(self, opened: _Open, rec: Any) -> None:
        policy = opened.policies.setdefault(rec.policy or "?", _Policy())
        if policy.decision is None:
            policy.decision = opened.trace.decision(rec.policy or "?", "act",
                                                    dry_run=bool(rec.dry_run))
        end = _record_end(rec)
        error: BaseException | str | None = None
        if rec.error:
            error = ActionError(rec.error)
        elif rec.outcome == FAILED:
            error = rec.reason or "failed"
        policy.decision.action(
            rec.action or "?", target=_target_text(rec.target), dry_run=bool(rec.dry_run),
            outcome=rec.outcome, rate_limited=rec.outcome in ("rate-limited", "cooldown"),
            guard=rec.guard, retries=rec.retries or 0, error=error, start_ns=rec.start_ns,
            end_ns=end, attributes=_action_attributes(rec))
        policy.last_end_ns = max(policy.last_end_ns, end)
        if policy.expected is not None:
            # an action whose follow-up (a snapshot's upload) is still to come counts once
            # more: that follow-up's own record ends the policy's span
            policy.expected -= 0 if getattr(rec, "pending", None) else 1
        self._maybe_close_policy(policy)

    def _maybe_close_policy(self, policy: _Policy) -> None:
        if policy.expected is not None and policy.expected <= 0 and not policy.done:
            policy.done = True
            if policy.decision is not None:
                policy.decision.end(policy.last_end_ns or None)

    def _finish(self, match_id: str) -> None:
        opened = self._open.pop(match_id, None)
        if opened is None:
            return
        ends = [opened.last_end_ns]
        for policy in opened.policies.values():
            if not policy.done and policy.decision is not None:
                policy.decision.end(policy.last_end_ns or None)
            ends.append(policy.last_end_ns)
        opened.trace.end(matched_policies=len(opened.policies), end_ns=max(ends) or None)

    def _end_stale(self) -> None:
        now = time.monotonic_ns()
        for match_id, opened in list(self._open.items()):
            if now - opened.opened_ns > STALE_NS:
                self._finish(match_id)


def _root_start(rec: Any) -> int:
    """The event's time when it is plausible (so the root spans event -> last action)."""
    start = rec.start_ns
    event = getattr(rec, "event_time_ns", None)
    if event and 0 < start - event < STALE_NS:
        return int(event)
    return int(start)


def _record_end(rec: Any) -> int:
    return int(rec.start_ns + (rec.duration_ns or 0)) if rec.kind != MATCH else int(
        rec.start_ns)


def _target_text(target: Any) -> str:
    if not target:
        return ""
    if isinstance(target, dict):
        return " ".join(f"{k}={v}" for k, v in sorted(target.items()))
    return str(target)


def _action_attributes(rec: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {"enforcer.policy": rec.policy or ""}
    if rec.index is not None:
        attrs["enforcer.action.index"] = rec.index
    if rec.reason:
        attrs["enforcer.reason"] = rec.reason
    if rec.message:
        attrs["enforcer.message"] = rec.message
    for key, value in (rec.target or {}).items():
        attrs[f"enforcer.target.{key}"] = value
    return attrs
