"""A reference evaluator: walks a condition tree for one event.

The engine never uses it (it runs generated code, see codegen); it exists to explain a
match and to cross-check the generated code. Each check is compiled with the same code
generator as the engine, so both share one definition of every operator; what this module
adds is a plain, obviously-correct walk of and/or/not/macro.
"""

from __future__ import annotations

from typing import Any

from enforcer.rules import codegen, nodes

_cache: dict[nodes.Check, Any] = {}


def _check_fn(check: nodes.Check):
    fn = _cache.get(check)
    if fn is None:
        fn = codegen.compile_check(check)
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[check] = fn
    return fn


def evaluate(expr: nodes.Expr, event: Any) -> bool:
    """True when `expr` matches `event` (an evaluation error counts as no match)."""
    if isinstance(expr, nodes.And):
        return all(evaluate(c, event) for c in expr.children)
    if isinstance(expr, nodes.Or):
        return any(evaluate(c, event) for c in expr.children)
    if isinstance(expr, nodes.Not):
        return not evaluate(expr.child, event)
    if isinstance(expr, nodes.Macro):
        return evaluate(expr.expr, event)
    if isinstance(expr, nodes.Check):
        try:
            return bool(_check_fn(expr)(event))
        except Exception:
            return False
    raise TypeError(f"cannot evaluate {expr!r}")


def rule_matches(rule, event: Any) -> bool:
    """Whether the engine would report `rule` for `event`: the event's type must be one the
    rule can match (as in Falco, rules only see events of their types), and the condition
    must hold."""
    types = rule.event_types
    if types is not None:
        try:
            if event.get("evt.type") not in types:
                return False
        except TypeError:
            return False
    return evaluate(rule.expr, event)
