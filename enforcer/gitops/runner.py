"""Running one policy test case: events through the real rules engine, alerts through the
real responder (policy selection, order, rate limits, cooldowns, guards) in forced dry-run
with offline actions (enforcer.gitops.offline), then what happened compared with what the
case expects."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from actions.base import DRY_RUN, RATE_LIMITED
from enforcer.audit.memory import MemoryAudit
from enforcer.audit.record import ACTION, DECISION
from enforcer.gitops.bundle import Bundle
from enforcer.gitops.cases import Case, ExpectedStep
from enforcer.gitops.offline import offline_policies
from enforcer.policy.guards import DEFAULT_PROTECTED_NAMESPACES, Guards
from enforcer.respond.responder import Responder

TEST_NODE = "enforcer-test-node"


@dataclass(frozen=True)
class Step:
    """One thing the responder did for a case: an action's outcome, or a rate limit."""

    policy: str
    action: str | None
    outcome: str
    target: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None

    def __str__(self) -> str:
        what = f"{self.policy}/{self.action}" if self.action else self.policy
        extra = f" {_show(self.target)}" if self.target else ""
        why = f" ({self.reason})" if self.reason and self.outcome != "planned" else ""
        return f"{what} {self.outcome}{extra}{why}"


@dataclass
class CaseResult:
    case: Case
    rules: list[str]
    steps: list[Step]
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


def run_case(bundle: Bundle, case: Case, *,
             protected_namespaces: Iterable[str] = DEFAULT_PROTECTED_NAMESPACES,
             node_name: str = TEST_NODE) -> CaseResult:
    """Replay the case's events and compare. A fresh responder per case: rate limits and
    cooldowns carry over between the events of one case, never between cases."""
    audit = MemoryAudit()
    critical: list[Any] = []
    responder = Responder(offline_policies(bundle.policies), audit, dry_run=True,
                          node_name=node_name,
                          guards=Guards(protected_namespaces=protected_namespaces,
                                        node_name=node_name),
                          on_critical=critical.append, hostname="enforcer-test",
                          policy_digest=bundle.short_digest)
    rules: list[str] = []
    responder.start()
    try:
        for event in case.events:
            for alert in bundle.engine.evaluate(event):
                rules.append(alert.rule)
                responder.submit(alert)
                # one match at a time: the responder's lanes (kill, slow) would otherwise
                # interleave the records of successive matches
                responder.drain()
    finally:
        responder.stop()
    steps = [_step(r) for r in audit.records
             if r.kind == ACTION or (r.kind == DECISION and r.outcome == RATE_LIMITED)]
    return CaseResult(case, rules, steps, compare(case, rules, steps, bundle))


def _step(rec: Any) -> Step:
    if rec.kind == DECISION:
        return Step(rec.policy, None, RATE_LIMITED, reason=rec.reason)
    outcome = "planned" if rec.outcome == DRY_RUN else rec.outcome
    params = (rec.render or {}).get("params", {})
    return Step(rec.policy, rec.action, outcome, dict(rec.target or {}), params,
                rec.reason or rec.error)


def compare(case: Case, rules: list[str], steps: list[Step], bundle: Bundle) -> list[str]:
    """Why the case failed, one message per difference (empty: it passed)."""
    failures = []
    if case.silence:
        if rules or steps:
            failures.append("expected silence, got:" + _listing(
                [f"alert {r}" for r in rules] + [str(s) for s in steps]))
        return failures
    if case.rules is not None and rules != case.rules:
        failures.append(f"rules: expected:{_listing(case.rules)}\n  got:{_listing(rules)}")
    if case.steps is not None:
        if len(case.steps) != len(steps) or not all(
                _step_matches(e, g, bundle) for e, g in zip(case.steps, steps, strict=False)):
            failures.append("actions: expected:" + _listing([_expected(e) for e in case.steps])
                            + "\n  got:" + _listing([str(s) for s in steps]))
    return failures


def _step_matches(expected: ExpectedStep, got: Step, bundle: Bundle) -> bool:
    if (expected.policy, expected.action, expected.outcome) != (got.policy, got.action,
                                                                got.outcome):
        return False
    for key, value in expected.target.items():
        if key not in got.target or _plain(got.target[key]) != _plain(value):
            if str(got.target.get(key)) != str(value):
                return False
    for key, value in expected.params.items():
        if key not in got.params or _plain(got.params[key]) != _plain(
                _parse_param(bundle, got, key, value)):
            return False
    return True


def _parse_param(bundle: Bundle, got: Step, key: str, value: Any) -> Any:
    """The expected value as the action's Params would hold it (`KILL` -> `SIGKILL`,
    `50Mi` -> bytes), so a case can be written the way the policy is."""
    for policy in bundle.policies.policies:
        for step in policy.actions:
            if policy.name != got.policy or step.name != got.action:
                continue
            for spec in dataclasses.fields(step.action.params_type):
                parse = spec.metadata.get("parse")
                if spec.name == key and parse is not None:
                    try:
                        return parse(value)
                    except ValueError:
                        return value
    return value


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list, sort_keys=True))


def _expected(step: ExpectedStep) -> str:
    what = f"{step.policy}/{step.action}" if step.action else step.policy
    extra = f" {_show(step.target)}" if step.target else ""
    extra += f" params {_show(step.params)}" if step.params else ""
    return f"{what} {step.outcome}{extra}"


def _show(mapping: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in mapping.items()) + "}"


def _listing(items: list[str]) -> str:
    """One numbered item per line (indented under the message), or ` nothing`."""
    if not items:
        return " nothing"
    return "".join(f"\n    {i}. {item}" for i, item in enumerate(items, 1))
