"""The in-kernel open filter, derived from the loaded rules.

Opens are by far the most frequent events the rules ask for, and most rules about opens
only care about a few paths (`/etc/shadow`, below `/etc`, `/root/.ssh`...). For every
enabled rule that can match an open, the expanded condition is over-approximated, for an
open event, by a set of (absolute path prefix, open kinds) pairs: the event can only match
if its path starts with one of the prefixes and its kind (read/write) is among the kinds.
The union over all such rules is loaded into the probe's LPM trie; the kernel drops every
other open with an absolute, already-normal path. Relative paths and paths containing
`/.` or `//` always reach userspace (only it can resolve them).

Soundness over precision: anything not understood (negations, `contains`, `endswith`,
regexes, transformers, fields other than fd.name/fd.directory/evt.is_open_*) widens to
"any path, any kind", and a single such rule turns the filter off.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from enforcer.sources.probe import OPEN_ANY, OPEN_READ, OPEN_WRITE

OPEN_TYPES = frozenset({"open", "openat", "openat2", "creat"})
ALL = OPEN_READ | OPEN_WRITE | OPEN_ANY

Constraint = frozenset[tuple[str, int]]
TOP: Constraint = frozenset({("", ALL)})
EMPTY: Constraint = frozenset()
_MAX_PRODUCT = 20000


def open_filter_for(rules: Iterable[Any]) -> dict[str, int] | None:
    """{prefix: kinds} for the probe (exact paths end with NUL), or None for no filter."""
    from enforcer.rules import nodes  # noqa: PLC0415 - only the agent needs the rules here

    total: Constraint = EMPTY
    any_rule = False
    for rule in rules:
        if not getattr(rule, "enabled", True):
            continue
        types = getattr(rule, "event_types", None)
        if types is not None and not (set(types) & OPEN_TYPES):
            continue
        any_rule = True
        total = _union(total, _approx(rule.expr, nodes))
        if ("", ALL) in total:
            return None
    if not any_rule:
        return {}  # no rule looks at opens: the kernel may drop every absolute one
    merged: dict[str, int] = {}
    for prefix, mask in total:
        merged[prefix] = merged.get(prefix, 0) | mask
    return merged


def _approx(expr: Any, nodes: Any) -> Constraint:
    """Over-approximation of `expr` on open events (recursive; rule ASTs are shallow)."""
    if isinstance(expr, nodes.Macro):
        return _approx(expr.expr, nodes)
    if isinstance(expr, nodes.And):
        acc = TOP
        for child in expr.children:
            acc = _intersect(acc, _approx(child, nodes))
            if not acc:
                return EMPTY
        return acc
    if isinstance(expr, nodes.Or):
        acc = EMPTY
        for child in expr.children:
            acc = _union(acc, _approx(child, nodes))
        return acc
    if isinstance(expr, nodes.Not):
        return _negated(expr.child, nodes)
    if isinstance(expr, nodes.Check):
        return _check(expr, nodes)
    return TOP


def _negated(child: Any, nodes: Any) -> Constraint:
    while isinstance(child, nodes.Macro):
        child = child.expr
    if isinstance(child, nodes.Not):
        return _approx(child.child, nodes)
    if isinstance(child, nodes.Check):
        admitted = _evt_types(child, nodes)
        if admitted is not None:
            return EMPTY if not (OPEN_TYPES - admitted) else TOP
    return TOP


def _evt_types(check: Any, nodes: Any) -> frozenset[str] | None:
    """The open types an evt.type check admits; None if it is not such a check."""
    left = check.left
    if not (isinstance(left, nodes.Field) and left.name == "evt.type" and left.arg is None):
        return None
    if check.op in ("=", "==") and isinstance(check.right, nodes.Value):
        return frozenset({check.right.text}) & OPEN_TYPES
    if check.op == "!=" and isinstance(check.right, nodes.Value):
        return OPEN_TYPES - {check.right.text}
    if check.op in ("in", "intersects") and isinstance(check.right, nodes.ValueList):
        return frozenset(v.text for v in check.right.items) & OPEN_TYPES
    return OPEN_TYPES


def _values(check: Any, nodes: Any) -> list[str] | None:
    if isinstance(check.right, nodes.Value):
        return [check.right.text]
    if isinstance(check.right, nodes.ValueList):
        return [v.text for v in check.right.items]
    return None


def _check(check: Any, nodes: Any) -> Constraint:
    admitted = _evt_types(check, nodes)
    if admitted is not None:
        return TOP if admitted else EMPTY
    left = check.left
    if not isinstance(left, nodes.Field) or left.arg is not None:
        return TOP
    op = check.op
    values = _values(check, nodes)
    if left.name in ("evt.is_open_read", "evt.is_open_write"):
        if op in ("=", "==") and values and values[0].lower() == "true":
            return frozenset({("", OPEN_READ if left.name.endswith("read") else OPEN_WRITE)})
        return TOP
    if values is None or not all(v.startswith("/") for v in values):
        return TOP
    if left.name == "fd.name":
        if op in ("=", "==", "in"):
            return frozenset((v + "\0", ALL) for v in values)
        if op in ("startswith", "pmatch"):
            return frozenset((v, ALL) for v in values)
        if op == "glob":
            return frozenset((_glob_prefix(v), ALL) for v in values)
        return TOP
    if left.name == "fd.directory":
        if op in ("=", "==", "in"):
            return frozenset((v.rstrip("/") + "/", ALL) for v in values)
        if op in ("startswith", "pmatch"):
            return frozenset((v, ALL) for v in values)
        return TOP
    return TOP


def _glob_prefix(pattern: str) -> str:
    for i, ch in enumerate(pattern):
        if ch in "*?[\\":
            return pattern[:i]
    return pattern + "\0"


def _intersect(a: Constraint, b: Constraint) -> Constraint:
    if a == TOP:
        return b
    if b == TOP:
        return a
    if len(a) * len(b) > _MAX_PRODUCT:
        return a if len(a) <= len(b) else b  # a superset of the intersection: still sound
    out = set()
    for p1, m1 in a:
        for p2, m2 in b:
            m = m1 & m2
            if not m:
                continue
            if p1.startswith(p2):
                out.add((p1, m))
            elif p2.startswith(p1):
                out.add((p2, m))
    return frozenset(out)


def _union(a: Constraint, b: Constraint) -> Constraint:
    return a | b
