"""Evaluate events against a loaded RuleSet: `Engine(ruleset).evaluate(event) -> [Alert]`.

The enabled rules are compiled once into generated Python (see codegen), one function per
event type; evaluating an event is one dict lookup on `evt.type` and one call. Alerts are
built only for matches: output rendered (without Falco's time prefix), `output_fields`
holding every %field of the output (plus `evt.time` in ns, as Falco's), time from
`evt.rawtime` (ns), or `evt.time` when it is an integer (ns), else now.

Options, as Falco's configuration: `rule_matching="first"` stops at the first matching
rule in rule order (the default "all" reports every match); `append_output` entries (see
enforcer.rules.append_output) extend the outputs and output_fields of the rules they match.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from enforcer.alert import Alert
from enforcer.rules.append_output import (
    AppendOutput,
    ExtraField,
    extended_output,
    extra_fields_for,
)
from enforcer.rules.codegen import CompiledRules, compile_rules
from enforcer.rules.output import Renderer, compile_output
from enforcer.rules.ruleset import Rule, RuleSet

RULE_MATCHING = ("all", "first")


class Engine:
    """Matches events against the enabled rules of a RuleSet."""

    def __init__(self, ruleset: RuleSet, hostname: str | None = None,
                 rule_matching: str = "all", append_output: Sequence[AppendOutput] = ()):
        if rule_matching not in RULE_MATCHING:
            raise ValueError(f"rule_matching must be 'all' or 'first', not {rule_matching!r}")
        self.ruleset = ruleset
        self.hostname = socket.gethostname() if hostname is None else hostname
        self.rule_matching = rule_matching
        self.rules: list[Rule] = ruleset.enabled_rules()
        self._renderers = [_renderer(r, append_output) for r in self.rules]
        # per rule: the extra output_fields of the append_output entries matching it
        self._extra_fields: list[list[tuple[str, Callable[[Any], Any]]]] = [
            [_extra_field(f) for f in extra_fields_for(r, append_output)]
            for r in self.rules] if append_output else [[] for _ in self.rules]
        self.compiled: CompiledRules = compile_rules(
            [(i, r.expr, r.event_types) for i, r in enumerate(self.rules)],
            first=rule_matching == "first")
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
        for key, value in self._extra_fields[index]:
            fields[key] = value(event)
        # Falco's alert prefix is "%evt.time: %priority", so its JSON output_fields always
        # carry evt.time, as nanoseconds since the epoch.
        fields["evt.time"] = time_ns
        return Alert(rule=rule.name, priority=rule.priority, output=output,
                     output_fields=fields, time_ns=time_ns,
                     source=rule.source, tags=rule.tags, hostname=self.hostname, event=event)


def _renderer(rule: Rule, append_output: Sequence[AppendOutput]) -> Renderer | None:
    if append_output:
        text = extended_output(rule, append_output)
        if rule.output_format is None or text != rule.output_format.text:
            return Renderer(compile_output(text))
    return Renderer(rule.output_format) if rule.output_format else None


def _extra_field(f: ExtraField) -> tuple[str, Callable[[Any], Any]]:
    """(key, event -> value): a formatted field renders text; a raw field keeps the
    value's type (None when missing), as Falco's raw fields do."""
    if f.raw is not None:
        raw = Renderer(compile_output("%" + f.raw.key))
        return f.key, lambda e: raw.render(e)[1][f.raw.key]
    assert f.format is not None
    text = Renderer(f.format)
    return f.key, lambda e: text.render(e)[0]


def event_time_ns(event: Any) -> int:
    """The event's time in ns: evt.rawtime, else an integer evt.time, else now."""
    raw = event.get("evt.rawtime")
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    t = event.get("evt.time")
    if isinstance(t, int) and not isinstance(t, bool):
        return t
    return time.time_ns()
