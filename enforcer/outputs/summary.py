"""Falco's end-of-run summary ("Events detected", counts by severity and by rule), printed
by `enforcer replay` and by the live agent when it stops."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from enforcer.alert import Alert
from enforcer.priority import Priority

# Falco prints the short priority names, upper-cased (Informational is "INFO").
_SHORT = {Priority.INFORMATIONAL: "INFO"}


def short_name(p: Priority) -> str:
    return _SHORT.get(p, p.name)


@dataclass
class AlertStats:
    """Counts of alerts, by priority and by rule.

    Falco lists rules by rule id, i.e. in the order the rules were loaded: pass
    `rule_order` (e.g. `list(ruleset.rules)`) for that; rules not in it follow in the
    order they first fired.
    """

    rule_order: list[str] = field(default_factory=list)
    total: int = 0
    by_priority: Counter = field(default_factory=Counter)
    by_rule: dict[str, int] = field(default_factory=dict)

    def record(self, alert: Alert, rule: str | None = None) -> None:
        """Count `alert`, under `rule` when given (a bounded label for its rule name)."""
        name = alert.rule if rule is None else rule
        self.total += 1
        self.by_priority[alert.priority] += 1
        self.by_rule[name] = self.by_rule.get(name, 0) + 1

    def format(self) -> str:
        """The summary exactly as Falco prints it (with a trailing newline)."""
        lines = [f"Events detected: {self.total}", "Rule counts by severity:"]
        for prio in sorted(self.by_priority):
            lines.append(f"   {short_name(prio)}: {self.by_priority[prio]}")
        lines.append("Triggered rules by rule name:")
        rank = {name: i for i, name in enumerate(self.rule_order)}
        names = sorted(self.by_rule, key=lambda n: rank.get(n, len(rank)))
        for name in names:
            lines.append(f"   {name}: {self.by_rule[name]}")
        return "\n".join(lines) + "\n"
