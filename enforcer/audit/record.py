"""The audit record: one decision or outcome of the responder, structured.

This is the seam between the responder and every audit backend: the responder builds
AuditRecords and hands each to an `AuditSink.record()`; the JSONL log writes them, and an
OpenTelemetry backend can turn the same records into spans (one trace per `match_id`, a
`decision` record per policy and an `action` record per action, with start and duration)."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

# kinds
MATCH = "match"          # an alert matched one or more policies (or the queue dropped it)
DECISION = "decision"    # a policy's verdict for a match: act, rate-limited, disabled…
ACTION = "action"        # one action's outcome: done, noop, dry-run, suppressed, skipped…
BREAKER = "breaker"      # a policy's blast-radius breaker tripped (critical) or was resumed
DROP = "drop"            # the responder's queue was full: the match was not handled
RELOAD = "reload"        # a new rules + policies set was applied, or refused (critical)
K8S_EVENT = "k8s_event"  # a Kubernetes Event for an outcome could not be created


def new_match_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass
class AuditRecord:
    kind: str
    match_id: str
    outcome: str
    rule: str | None = None
    priority: str | None = None
    policy: str | None = None
    action: str | None = None
    index: int | None = None           # position of the action in its policy
    target: dict[str, Any] | None = None
    dry_run: bool | None = None
    reason: str | None = None          # why: the guard, the missing fields, the error
    guard: str | None = None
    message: str | None = None
    render: dict[str, Any] | None = None   # the exact operation, done or that would be done
    detail: dict[str, Any] | None = None
    retries: int = 0
    error: str | None = None
    trace_id: str | None = None
    policy_digest: str | None = None   # the rules + policies set that decided (short sha256)
    # a follow-up of this action still to come, audited as its own record (e.g.
    # "snapshot.upload"): the trace of the match stays open for it
    pending: str | None = None
    start_ns: int = field(default_factory=time.time_ns)
    duration_ns: int | None = None
    event_time_ns: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, without empty fields."""
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}


class AuditSink(Protocol):
    """Where audit records go. `record` must not raise and must not block for long."""

    def record(self, rec: AuditRecord) -> None: ...

    def close(self) -> None: ...


class FanOut:
    """Several sinks as one (e.g. JSONL + OpenTelemetry)."""

    def __init__(self, *sinks: AuditSink):
        self.sinks = list(sinks)

    def record(self, rec: AuditRecord) -> None:
        for sink in self.sinks:
            sink.record(rec)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
