"""Partial evaluation: decide what can be decided now, keep the rest.

`reduce(expr, known, pending)` evaluates every check whose fields are all known now (e.g.
proc.*, user.*, container.* at exec time) and keeps, as AST, the checks on `pending`
fields (e.g. fd.name, evt.arg.* of a later syscall). The result is True, False, or the
residue: an expression over pending fields only, equivalent to `expr` for every event whose
non-pending fields equal `known`. A field that is neither pending nor in `known` is
missing, so checks on it are false, exactly as at evaluation time.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping
from typing import Any

from enforcer.rules import checks, nodes
from enforcer.rules.evaluate import evaluate

Residue = bool | nodes.Expr


def _fields_of(check: nodes.Check) -> list[str]:
    out = [check.field.name]
    if isinstance(check.right, nodes.FieldValue):
        op = check.right.operand
        out.append((op if isinstance(op, nodes.Field) else op.field).name)
    return out


def reduce(expr: nodes.Expr, known: Mapping[str, Any],
           pending: Collection[str]) -> Residue:
    """True/False when `known` decides `expr`, else the residue over `pending` fields.

    `pending` holds field names without arguments (`fd.name`, `evt.arg.flags`,
    `proc.aname`); `known` is keyed like an event (see enforcer.event).
    """
    pending = set(pending)
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20_000))
    try:
        return _reduce(expr, known, pending)
    finally:
        sys.setrecursionlimit(old)


def _reduce(expr: nodes.Expr, known: Mapping[str, Any], pending: set[str]) -> Residue:
    if isinstance(expr, nodes.Check):
        if any(name in pending for name in _fields_of(expr)):
            return expr
        return evaluate(expr, known)
    if isinstance(expr, nodes.Not):
        r = _reduce(expr.child, known, pending)
        return (not r) if isinstance(r, bool) else nodes.Not(r)
    if isinstance(expr, nodes.Macro):
        r = _reduce(expr.expr, known, pending)
        return r if isinstance(r, bool) else nodes.Macro(expr.name, r)
    if isinstance(expr, nodes.And | nodes.Or):
        is_and = isinstance(expr, nodes.And)
        kept: list[nodes.Expr] = []
        for child in expr.children:
            r = _reduce(child, known, pending)
            if r is (not is_and):
                return not is_and
            if r is is_and:
                continue
            kept.append(r)
        if not kept:
            return is_and
        if len(kept) == 1:
            return kept[0]
        return nodes.And(tuple(kept)) if is_and else nodes.Or(tuple(kept))
    raise TypeError(f"cannot reduce {expr!r}")


def residue_fields(residue: Residue) -> set[str]:
    """The fields a residue still reads."""
    if isinstance(residue, bool):
        return set()
    return {f.name for f in checks.used_fields(residue)}
