"""Evaluate events against a loaded RuleSet: `Engine(ruleset).evaluate(event) -> [Alert]`.

The enabled rules are compiled once into generated Python (see codegen), one function per
event type; evaluating an event is one dict lookup on `evt.type` and one call. Alerts are
built only for matches: output rendered (without Falco's time prefix), `output_fields`
holding every %field of the output (plus `evt.time` in ns, as Falco's), time from
`evt.rawtime` (ns), or `evt.time` when it is an integer (ns), else now.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from typing import Any

from enforcer.alert import Alert
from enforcer.rules.codegen import CompiledRules, compile_rules
from enforcer.rules.output import Renderer
from enforcer.rules.ruleset import Rule, RuleSet


class Engine:
    """Matches events against the enabled rules of a RuleSet."""

    def __init__(self, ruleset: RuleSet, hostname: str | None = None):
        self.ruleset = ruleset
        self.hostname = socket.gethostname() if hostname is None else hostname
        self.rules: list[Rule] = ruleset.enabled_rules()
        self._renderers = [Renderer(r.output_format) if r.output_format else None
                           for r in self.rules]
        self.compiled: CompiledRules = compile_rules(
            [(i, r.expr, r.event_types) for i, r in enumerate(self.rules)])
        self._by_type = self.compiled.by_type
        self._fallback = self.compiled.fallback
        # rule name -> number of events on which evaluating the rule raised (bad values)
        self.evaluation_errors: Counter[str] = Counter()

    def _failed(self, index: int) -> None:
        self.evaluation_errors[self.rules[index].name] += 1

    def event_types(self) -> frozenset[str] | None:
        """Union of the enabled rules' event types; None when some rule matches any type."""
        out: set[str] = set()
        for r in self.rules:
            if r.event_types is None:
                return None
            out |= r.event_types
        return frozenset(out)

    def matching_rules(self, event: Any) -> list[Rule]:
        """The enabled rules that match `event`, in rule order (no alerts built)."""
        return [self.rules[i] for i in self._match(event)]

    def _match(self, event: Any) -> list[int]:
        try:
            fn = self._by_type.get(event.get("evt.type"), self._fallback)
        except TypeError:  # an unhashable evt.type value
            fn = self._fallback
        return fn(event, self._failed)

    def evaluate(self, event: Any) -> list[Alert]:
        """Alerts for every enabled rule the event matches, in rule order."""
        hits = self._match(event)
        if not hits:
            return []
        return [self.alert(i, event) for i in hits]

    def alert(self, index: int, event: Any) -> Alert:
        rule = self.rules[index]
        renderer = self._renderers[index]
        if renderer is None:
            output, fields = rule.output, {}
        else:
            output, fields = renderer.render(event)
        time_ns = event_time_ns(event)
        # Falco's alert prefix is "%evt.time: %priority", so its JSON output_fields always
        # carry evt.time, as nanoseconds since the epoch.
        fields["evt.time"] = time_ns
        return Alert(rule=rule.name, priority=rule.priority, output=output,
                     output_fields=fields, time_ns=time_ns,
                     source=rule.source, tags=rule.tags, hostname=self.hostname, event=event)


def event_time_ns(event: Any) -> int:
    """The event's time in ns: evt.rawtime, else an integer evt.time, else now."""
    raw = event.get("evt.rawtime")
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    t = event.get("evt.time")
    if isinstance(t, int) and not isinstance(t, bool):
        return t
    return time.time_ns()
