"""Response policies as loaded: which alerts they match and what they do."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from actions.base import Action
from enforcer.errors import Diagnostic
from enforcer.policy.blast_radius import BreakerLimits
from enforcer.policy.field_match import FieldCondition
from enforcer.priority import Priority

_COMPARE = {
    ">=": lambda p, m: p.value <= m.value,
    ">": lambda p, m: p.value < m.value,
    "<=": lambda p, m: p.value >= m.value,
    "<": lambda p, m: p.value > m.value,
    "==": lambda p, m: p.value == m.value,
}


@dataclass(frozen=True)
class PriorityFilter:
    """`>=notice` etc.; lower Priority values are more severe, as in Falco."""

    op: str
    priority: Priority

    @classmethod
    def parse(cls, text: str) -> PriorityFilter:
        """`>=notice`, `>warning`, `==critical`, or a bare name meaning `>=`."""
        raw = str(text).strip()
        for op in (">=", "<=", "==", ">", "<"):
            if raw.startswith(op):
                return cls(op, Priority.parse(raw[len(op):]))
        return cls(">=", Priority.parse(raw))

    def accepts(self, priority: Priority) -> bool:
        return _COMPARE[self.op](priority, self.priority)

    def __str__(self) -> str:
        return f"{self.op}{self.priority.display.lower()}"


@dataclass(frozen=True)
class Match:
    """All given criteria must hold: any of `rules` (names or globs), all of `tags`,
    the priority filter, every field condition (a value among several, none of
    several, any-of and all-of groups: enforcer.policy.field_match), and the source."""

    rules: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    priority: PriorityFilter | None = None
    fields: tuple[FieldCondition, ...] = ()  # all of them (enforcer.policy.field_match)
    source: str | None = None

    def names_rule(self, rule: str) -> bool:
        """True when `rules` names `rule` (exactly or by a glob)."""
        return any(_name_matches(p, rule) for p in self.rules)

    def matches(self, alert: Any) -> bool:
        if self.rules and not any(_name_matches(p, alert.rule) for p in self.rules):
            return False
        if self.tags and not set(self.tags).issubset(alert.tags or ()):
            return False
        if self.priority is not None and not self.priority.accepts(alert.priority):
            return False
        if self.source is not None and alert.source != self.source:
            return False
        return all(condition.matches(alert) for condition in self.fields)


def _name_matches(pattern: str, name: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern == name


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: `burst` actions at once, refilled at `max` per `per` seconds."""

    max: int
    per: float
    burst: int


@dataclass(frozen=True)
class BreakerOverride:
    """A policy's own blast-radius limits; a missing one is the agent's default
    (`--breaker-workloads`, `--breaker-window`, `--breaker-cooloff`)."""

    workloads: int | None = None
    window: float | None = None
    cooloff: float | None = None

    def resolve(self, defaults: BreakerLimits) -> BreakerLimits:
        return BreakerLimits(
            self.workloads if self.workloads is not None else defaults.workloads,
            self.window if self.window is not None else defaults.window,
            self.cooloff if self.cooloff is not None else defaults.cooloff)


@dataclass(frozen=True)
class ActionStep:
    """One entry of a policy's ordered `actions`, with its validated parameters."""

    name: str
    action: Action
    line: int = 0
    column: int = 0


@dataclass(frozen=True)
class Escalation:
    """When one workload triggers the policy `after` times within `within` seconds, the
    `actions` run too (after the policy's own), and the count starts again."""

    after: int
    within: float
    actions: tuple[ActionStep, ...]


@dataclass(frozen=True)
class Policy:
    name: str
    match: Match
    actions: tuple[ActionStep, ...]
    dry_run: bool = True
    rate_limit: RateLimit | None = None
    cooldown: float | None = None
    on_failure: str = "continue"
    enabled: bool = True
    desc: str = ""
    file: str = ""
    line: int = 0
    breaker: BreakerOverride | None = None
    escalate: Escalation | None = None
    final: bool = False  # the matching policies after this one do not answer its alerts

    @property
    def destructive(self) -> bool:
        """Whether any action (escalation included) mutates: the breaker covers it."""
        steps = self.actions + (self.escalate.actions if self.escalate else ())
        return any(getattr(s.action, "destructive", False) for s in steps)


@dataclass
class PolicySet:
    """Policies in file order (later files may override a name with `override: true`)."""

    policies: list[Policy] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def enabled(self) -> list[Policy]:
        return [p for p in self.policies if p.enabled]

    def select(self, alert: Any) -> list[Policy]:
        """The enabled policies whose match accepts `alert`, in order, up to and including
        the first `final` one."""
        chosen = []
        for policy in self.policies:
            if policy.enabled and policy.match.matches(alert):
                chosen.append(policy)
                if policy.final:
                    break
        return chosen

    def counts(self) -> dict[str, int]:
        return {"policies": len(self.policies),
                "enabled": len(self.enabled()),
                "actions": sum(len(p.actions) for p in self.policies)}
