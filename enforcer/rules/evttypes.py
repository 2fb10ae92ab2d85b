"""Which event types a condition can match (Falco's evttype resolver).

`evt.type = X` and `evt.type in (...)` name types; `!=`, `not` and every other check widen
to "any". The result is a set of names, or None meaning any type. An empty set means the
condition can never match.
"""

from __future__ import annotations

from enforcer.rules import nodes

# (negated, names): negated=False -> exactly `names`; negated=True -> all but `names`.
_ANY = (True, frozenset())


def _check(c: nodes.Check) -> tuple[bool, frozenset[str]]:
    if not (isinstance(c.left, nodes.Field) and c.left.name == "evt.type"
            and c.left.arg is None) or c.modifier:
        return _ANY
    if c.op == "=" and isinstance(c.right, nodes.Value):
        return (False, frozenset({c.right.text}))
    if c.op == "!=" and isinstance(c.right, nodes.Value):
        return (True, frozenset({c.right.text}))
    if c.op in ("in", "intersects") and isinstance(c.right, nodes.ValueList):
        return (False, frozenset(v.text for v in c.right.items))
    return _ANY


def _and(a, b):
    (na, sa), (nb, sb) = a, b
    if not na and not nb:
        return (False, sa & sb)
    if not na:
        return (False, sa - sb)
    if not nb:
        return (False, sb - sa)
    return (True, sa | sb)


def _or(a, b):
    (na, sa), (nb, sb) = a, b
    if not na and not nb:
        return (False, sa | sb)
    if na and nb:
        return (True, sa & sb)
    if na:
        return (True, sa - sb)
    return (True, sb - sa)


def resolve(expr: nodes.Expr) -> tuple[bool, frozenset[str]]:
    """(negated, names) for `expr`, without recursion.

    Negation is pushed down to the checks (De Morgan), as libsinsp does, so that
    `not (evt.type = open and proc.name = x)` still includes open events.
    """
    results: dict[tuple[int, bool], tuple[bool, frozenset[str]]] = {}
    stack: list[tuple[nodes.Expr, bool, bool]] = [(expr, False, False)]
    while stack:
        node, inv, done = stack.pop()
        if isinstance(node, nodes.Check):
            neg, names = _check(node)
            if (neg, names) != _ANY and inv:
                neg = not neg
            results[(id(node), inv)] = (neg, names)
            continue
        if isinstance(node, nodes.Identifier):
            results[(id(node), inv)] = _ANY
            continue
        if isinstance(node, nodes.Not):
            kids, kinv = (node.child,), not inv
        elif isinstance(node, nodes.Macro):
            kids, kinv = (node.expr,), inv
        else:
            kids, kinv = node.children, inv
        if not done:
            stack.append((node, inv, True))
            stack.extend((k, kinv, False) for k in kids)
            continue
        parts = [results[(id(k), kinv)] for k in kids]
        if isinstance(node, nodes.And | nodes.Or):
            conj = isinstance(node, nodes.And) != inv
            acc = parts[0]
            for p in parts[1:]:
                acc = _and(acc, p) if conj else _or(acc, p)
        else:
            acc = parts[0]
        results[(id(node), inv)] = acc
    return results[(id(expr), False)]


def event_types(expr: nodes.Expr) -> frozenset[str] | None:
    """The event types `expr` can match, or None for any."""
    negated, names = resolve(expr)
    return None if negated else names
