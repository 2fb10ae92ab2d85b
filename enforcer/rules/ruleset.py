"""What loading produces: the rules, macros and lists, after every append and override."""

from __future__ import annotations

from dataclasses import dataclass, field

from enforcer.errors import Diagnostic
from enforcer.priority import Priority
from enforcer.rules import nodes
from enforcer.rules.output import OutputFormat


@dataclass(frozen=True)
class RuleException:
    """One `exceptions:` entry of a rule (values as written, tuples for list fields)."""

    name: str
    fields: str | tuple[str, ...]
    comps: str | tuple[str, ...]
    values: tuple


@dataclass(frozen=True)
class Rule:
    """A loaded rule. `expr` is the fully expanded condition (see enforcer.rules.nodes);
    `condition` is the condition text as written (appends joined with a space, without
    exceptions); `event_types` is None when the rule can match any event type."""

    name: str
    desc: str
    condition: str
    output: str
    priority: Priority
    enabled: bool
    tags: tuple[str, ...]
    source: str
    exceptions: tuple[RuleException, ...]
    event_types: frozenset[str] | None
    expr: nodes.Expr
    output_format: OutputFormat | None = field(default=None, compare=False, repr=False)
    file: str = ""
    line: int = 0
    capture: bool = False
    capture_duration: int = 0
    warn_evttypes: bool = True
    skip_if_unknown_filter: bool = False


@dataclass(frozen=True)
class Macro:
    name: str
    condition: str
    expr: nodes.Expr | None  # Macro(name, expanded body); None when it does not compile
    used: bool


@dataclass(frozen=True)
class RuleList:
    name: str
    items: tuple[str, ...]
    used: bool


@dataclass
class RuleSet:
    """Everything `load_rules` read, in definition order."""

    rules: dict[str, Rule] = field(default_factory=dict)
    macros: dict[str, Macro] = field(default_factory=dict)
    lists: dict[str, RuleList] = field(default_factory=dict)
    warnings: list[Diagnostic] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    required_engine_version: str = "0.0.0"
    skipped: dict[str, str] = field(default_factory=dict)  # rule name -> why (unknown source)

    def counts(self) -> dict[str, int]:
        """Distinct rules, macros and lists after appends/overrides, and enabled rules."""
        return {
            "rules": len(self.rules),
            "macros": len(self.macros),
            "lists": len(self.lists),
            "enabled": sum(1 for r in self.rules.values() if r.enabled),
        }

    def enabled_rules(self) -> list[Rule]:
        return [r for r in self.rules.values() if r.enabled]
