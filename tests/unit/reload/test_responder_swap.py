"""Responder.use_policies: the switch a reload makes. Rate limits survive it (a reload must
not refill a budget an attacker has used up); decisions carry the digest of their set."""

from __future__ import annotations

from pathlib import Path

from enforcer.alert import Alert
from enforcer.audit.memory import MemoryAudit
from enforcer.audit.record import DECISION
from enforcer.policy.loader import load_policies
from enforcer.priority import Priority
from enforcer.respond.responder import Responder

POLICY = """\
- policy: limited
  match: {rules: [R]}
  actions: [{kill: {}}]
  dry_run: true
  rate_limit: {max: 1, per: 1h, burst: BURST}
"""


def policies(tmp_path: Path, burst: int):
    path = tmp_path / f"p{burst}.yaml"
    path.write_text(POLICY.replace("BURST", str(burst)))
    return load_policies([path])


def alert() -> Alert:
    return Alert(rule="R", priority=Priority.WARNING, output="o", output_fields={},
                 time_ns=1, event={"proc.name": "x"})


def decisions(audit: MemoryAudit) -> list[tuple[str, str | None]]:
    return [(r.outcome, r.policy_digest) for r in audit.records if r.kind == DECISION]


def test_rate_limit_survives_a_reload_and_digest_follows_the_set(tmp_path):
    audit = MemoryAudit()
    responder = Responder(policies(tmp_path, 1), audit, dry_run=True,
                          policy_digest="aaaaaaaaaaaa").start()
    try:
        responder.submit(alert())
        responder.drain()
        responder.use_policies(policies(tmp_path, 1), "bbbbbbbbbbbb")  # same limits
        responder.submit(alert())
        responder.drain()
        responder.use_policies(policies(tmp_path, 2), "cccccccccccc")  # new limits
        responder.submit(alert())
        responder.drain()
    finally:
        responder.stop()
    assert decisions(audit) == [("act", "aaaaaaaaaaaa"), ("rate-limited", "bbbbbbbbbbbb"),
                                ("act", "cccccccccccc")]
    assert all(r.policy_digest for r in audit.records)
