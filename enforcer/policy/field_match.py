"""`match.fields` of a response policy: conditions on an alert's fields.

    fields:
      k8s.ns.name: [prod, staging]            # any of these values (globs allowed)
      proc.name: {not: [sh, bash]}            # none of these (`!=`); a missing field passes
      any_of:                                 # at least one group holds ...
        - {container.image.repository: "*/nginx", user.name: root}   # ... each all-of
        - {k8s.pod.name: "web-*"}
      all_of: [{...}, {...}]                  # every group holds

A mapping is all-of; a list of mappings (`fields: [...]` or `any_of: [...]`) is any-of, as
Falco Talon's `output_fields` list is (each of its strings all-of, `=` and `!=`)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GROUPS = ("any_of", "all_of")
Error = Callable[[tuple[Any, ...], str], None]


@dataclass(frozen=True)
class FieldTest:
    """`name` has one of `values` (or, negated, none of them)."""

    name: str
    values: tuple[str, ...]
    negate: bool = False

    def matches(self, alert: Any) -> bool:
        value = field_value(alert, self.name)
        hit = value is not None and any(value_matches(w, value) for w in self.values)
        return not hit if self.negate else hit


@dataclass(frozen=True)
class FieldGroup:
    """All (`all`) or at least one (`any`) of `items` hold."""

    kind: str
    items: tuple[FieldTest | FieldGroup, ...]

    def matches(self, alert: Any) -> bool:
        results = (item.matches(alert) for item in self.items)
        return all(results) if self.kind == "all" else any(results)


FieldCondition = FieldTest | FieldGroup


def value_matches(wanted: str, value: Any) -> bool:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if any(c in wanted for c in "*?["):
        return fnmatch.fnmatchcase(text, wanted)
    return text == wanted


def field_value(alert: Any, name: str) -> Any:
    value = (alert.output_fields or {}).get(name)
    if value is None and alert.event is not None:
        value = alert.event.get(name)
    return value


def parse_fields(path: tuple[Any, ...], raw: Any, error: Error) -> tuple[FieldCondition, ...]:
    """The all-of conditions of a `fields:` value (a mapping, or a list of mappings meaning
    any of them); every problem goes to `error(path, message)`."""
    if isinstance(raw, list):
        group = _groups(path, raw, "any", error)
        return (group,) if group is not None else ()
    if not isinstance(raw, dict):
        error(path, "fields must map a field name to a value, a list of values or "
                    "{not: ...}, or be a list of such mappings (any of them)")
        return ()
    out: list[FieldCondition] = []
    for name, wanted in raw.items():
        where = path + (name,)
        if name in GROUPS:
            group = _groups(where, wanted, "any" if name == "any_of" else "all", error)
            if group is not None:
                out.append(group)
            continue
        if isinstance(wanted, dict):
            unknown = set(wanted) - {"in", "not"}
            if unknown or not wanted:
                error(where, f"fields.{name}: a mapping here takes `not` (none of these values) "
                             f"and `in` (any of them), not {', '.join(map(str, unknown)) or '{}'}")
                continue
            for key, negate in (("in", False), ("not", True)):
                if key in wanted:
                    values = _values(where + (key,), wanted[key], f"fields.{name}.{key}", error)
                    if values:
                        out.append(FieldTest(str(name), values, negate))
            continue
        values = _values(where, wanted, f"fields.{name}", error)
        if values:
            out.append(FieldTest(str(name), values))
    return tuple(out)


def _groups(path: tuple[Any, ...], raw: Any, kind: str, error: Error) -> FieldGroup | None:
    if not isinstance(raw, list) or not raw or not all(isinstance(g, dict) for g in raw):
        error(path, "a group of field conditions is a non-empty list of mappings")
        return None
    items = [FieldGroup("all", parse_fields(path + (i,), g, error)) for i, g in enumerate(raw)]
    return FieldGroup(kind, tuple(items))


def _values(path: tuple[Any, ...], raw: Any, what: str, error: Error) -> tuple[str, ...]:
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(v, str | int | bool) for v in values):
        error(path, f"{what} must be a value or a list of values")
        return ()
    return tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in values)
