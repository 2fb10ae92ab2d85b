"""An audit sink that counts what the responder decided and did, for Prometheus.

It reads the same records as the JSONL log, so metrics can never disagree with the audit
trail: actions by action/outcome/dry_run with their latency, rate-limited responses (policy
rate limits and per-target cooldowns), guard refusals, responder queue drops, policy
suspensions by the blast-radius breaker (and matches it refused), and hot reloads.
"""

from __future__ import annotations

from typing import Any

from enforcer.audit.record import ACTION, BREAKER, DECISION, DROP
from enforcer.metrics import Metrics

RATE_LIMITED_OUTCOMES = frozenset({"rate-limited", "cooldown"})


class MetricsAudit:
    """`AuditSink` feeding `Metrics`; add it next to the JSONL log (e.g. with FanOut)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def record(self, rec: Any) -> None:
        kind, outcome = rec.kind, rec.outcome
        m = self.metrics
        if kind == ACTION:
            seconds = rec.duration_ns / 1e9 if rec.duration_ns is not None else None
            m.action_done(rec.action or "unknown", outcome, bool(rec.dry_run), seconds)
            if outcome == "suppressed":
                m.guard_refused(rec.guard or "unknown")
            elif outcome in RATE_LIMITED_OUTCOMES:
                m.response_rate_limited(rec.policy or "unknown")
        elif kind == DECISION and outcome in RATE_LIMITED_OUTCOMES:
            m.response_rate_limited(rec.policy or "unknown")
        elif kind == DECISION and outcome == "suspended":
            m.policy_refused_suspended(rec.policy or "unknown")
        elif kind == DROP:
            m.responder_dropped()
        elif kind == BREAKER:
            m.policy_breaker(rec.policy or "unknown", outcome)
        elif kind == "reload":  # hot reload of rules and policies (enforcer.reload)
            m.policies_loaded(outcome == "applied")

    def close(self) -> None:
        pass
