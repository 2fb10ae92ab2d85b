"""Compile rule conditions into Python source, once, per event type.

For each event type named by the enabled rules, one function `match(e) -> list[int]`
tests every rule that can match that type (rules that can match any type are in every
function), in rule order, and returns the indices of the rules that matched. Inside a
function:
- `evt.type` checks are decided at compile time (the function knows its type), and the
  and/or/not around them are folded, so most of a rule disappears for the wrong types;
- a macro used more than once is computed at most once per event (a lazy local);
- field reads are inlined (`g('proc.name')`, `g` being the event's `get`), literals are
  converted to the field's type at compile time, `in` uses frozensets, regexes and globs
  are precompiled.
A rule whose evaluation raises (an event carrying a value of the wrong type) does not
match; the engine counts it.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from enforcer.rules import access, checks, nodes, runtime

# Python's parser refuses very deep nesting; deeper subexpressions go into helper functions.
_HOIST_EVERY = 40


@dataclass
class _Unit:
    """Shared state while generating one module: constants and helper functions."""

    consts: dict[str, Any] = field(default_factory=dict)
    helpers: list[str] = field(default_factory=list)
    _const_ids: dict[tuple, str] = field(default_factory=dict)

    def const(self, value: Any, key: tuple | None = None) -> str:
        if key is not None and key in self._const_ids:
            return self._const_ids[key]
        name = f"_k{len(self.consts)}"
        self.consts[name] = value
        if key is not None:
            self._const_ids[key] = name
        return name


class _FunctionGen:
    def __init__(self, unit: _Unit, evtype: str | None, shared: set[str]):
        self.unit = unit
        self.evtype = evtype
        self.shared = shared  # macro names computed once per call
        self.macro_vars: dict[str, str] = {}
        self.depth = 0
        self.hoisted = 0  # >0 while generating a helper (no lazy macro locals there)
        # Compiled field access: each field a function reads is a lazy local, so only the
        # first read of it per event calls the event's get() (later reads, by the same or
        # the next rule, cost a local lookup). Not inside lambdas and helpers: an
        # assignment there would make a local of their own.
        self.field_vars: dict[tuple, str] = {}
        self.in_lambda = 0

    def prelude(self) -> list[str]:
        """The lines that start the generated function: the lazy locals, unset."""
        lines = []
        if self.macro_vars:
            lines.append("    " + " = ".join(self.macro_vars.values()) + " = None")
        if self.field_vars:
            lines.append("    " + " = ".join(self.field_vars.values()) + " = _M")
        return lines

    def _lazy(self, key: tuple, read: str) -> str:
        if self.hoisted or self.in_lambda:
            return read
        var = self.field_vars.setdefault(key, f"_f{len(self.field_vars)}")
        return f"({var} if {var} is not _M else ({var} := {read}))"

    # -- boolean structure ------------------------------------------------------------
    def emit(self, node: nodes.Expr) -> bool | str:
        self.depth += 1
        try:
            if self.depth % _HOIST_EVERY == 0:
                return self._hoist(node)
            return self._emit(node)
        finally:
            self.depth -= 1

    def _emit(self, node: nodes.Expr) -> bool | str:
        if isinstance(node, nodes.And | nodes.Or):
            is_and = isinstance(node, nodes.And)
            parts: list[str] = []
            for child in node.children:
                r = self.emit(child)
                if r is (not is_and):
                    return not is_and
                if r is is_and:
                    continue
                parts.append(r)
            if not parts:
                return is_and
            if len(parts) == 1:
                return parts[0]
            return "(" + (" and " if is_and else " or ").join(parts) + ")"
        if isinstance(node, nodes.Not):
            r = self.emit(node.child)
            if isinstance(r, bool):
                return not r
            return f"(not {r})"
        if isinstance(node, nodes.Macro):
            body = self.emit(node.expr)
            if isinstance(body, bool) or node.name not in self.shared or self.hoisted:
                return body
            var = self.macro_vars.setdefault(node.name, f"_m{len(self.macro_vars)}")
            return f"({var} if {var} is not None else ({var} := {body}))"
        if isinstance(node, nodes.Check):
            return self.check(node)
        raise TypeError(f"unexpected node {node!r}")  # Identifier: the loader resolves these

    def _hoist(self, node: nodes.Expr) -> bool | str:
        self.hoisted += 1
        try:
            body = self._emit(node)
        finally:
            self.hoisted -= 1
        if isinstance(body, bool):
            return body
        name = f"_h{len(self.unit.helpers)}"
        self.unit.helpers.append(f"def {name}(e, g):\n    return {body}\n")
        return f"{name}(e, g)"

    # -- checks -----------------------------------------------------------------------
    def value_code(self, node: nodes.Field | nodes.Transform) -> str:
        if isinstance(node, nodes.Transform):
            return f"_t_{node.func}({self.value_code(node.operand)})"
        key = access.simple_key(node)
        if key is not None:
            return self._lazy(("key", key), f"g({key!r})")
        fn = self.unit.const(access.getter(node), ("getter", node.key))
        return self._lazy(("getter", node.key), f"{fn}(e)")

    def check(self, c: nodes.Check) -> bool | str:
        left = c.left
        if (self.evtype is not None and isinstance(left, nodes.Field)
                and left.name == "evt.type" and left.arg is None):
            folded = self._fold_evtype(c)
            if folded is not None:
                return folded
        if isinstance(left, nodes.Field) and access.is_ancestor_any(left):
            if c.op == "exists":
                return f"bool({self.value_code(left)})"
            self.in_lambda += 1
            try:
                pred = self.compare("_v", c, checks.field_type(left))
            finally:
                self.in_lambda -= 1
            fn = "_any_of"
            return f"{fn}({self.value_code(left)}, lambda _v: {pred})"
        return self.compare(self.value_code(left), c, checks.field_type(left))

    def _fold_evtype(self, c: nodes.Check) -> bool | None:
        t = self.evtype
        if c.modifier:
            return None
        if c.op == "=" and isinstance(c.right, nodes.Value):
            return t == c.right.text
        if c.op == "!=" and isinstance(c.right, nodes.Value):
            return t != c.right.text
        if c.op in ("in", "intersects") and isinstance(c.right, nodes.ValueList):
            return t in {v.text for v in c.right.items}
        if c.op == "exists":
            return True
        return None

    def compare(self, v: str, c: nodes.Check, ftype: str) -> str:
        """Code for `c` given the code `v` of the left value (None when missing)."""
        op = c.op
        right = c.right
        if op == "exists":
            return f"({v} is not None)"
        if isinstance(right, nodes.FieldValue):
            return self._compare_fields(v, c, ftype)
        if c.modifier:
            return self._compare_modified(v, c, ftype)
        if isinstance(right, nodes.ValueList):
            return self._compare_list(v, op, right, ftype)
        assert isinstance(right, nodes.Value)
        lit = checks.convert(right.text, ftype if ftype != "list" else "string", op)
        k = self._lit(lit)
        if ftype == "ipaddr":
            if op == "=":
                return f"(_ip({v}) == {k})"
            return f"((_a := _ip({v})) is not None and _a != {k})"
        if ftype == "ipnet":
            if op == "=":
                return f"_in_nets({v}, ({k},))"
            return f"((_a := _ip({v})) is not None and not _in_nets(_a, ({k},)))"
        if ftype == "buffer" or op in ("bcontains", "bstartswith"):
            return self._compare_bytes(v, op, k)
        if ftype == "list":
            return "False"  # rejected by checks.validate; kept total
        if op == "=":
            return f"({v} == {k})"
        if op in ("!=", "<", "<=", ">", ">="):
            return f"((_a := {v}) is not None and _a {op} {k})"
        if op == "contains":
            return f"((_a := {v}) is not None and {k} in _a)"
        if op == "icontains":
            k = self._lit(lit.lower())
            return f"((_a := {v}) is not None and {k} in _a.lower())"
        if op == "startswith":
            return f"((_a := {v}) is not None and _a.startswith({k}))"
        if op == "endswith":
            return f"((_a := {v}) is not None and _a.endswith({k}))"
        if op in ("glob", "iglob"):
            pat = runtime.glob_regex(lit, op == "iglob").fullmatch
            kp = self.unit.const(pat, ("glob", op, lit))
            return f"((_a := {v}) is not None and {kp}(_a) is not None)"
        if op == "regex":
            kp = self.unit.const(re.compile(lit, re.DOTALL).fullmatch, ("regex", lit))
            return f"((_a := {v}) is not None and {kp}(_a) is not None)"
        raise ValueError(f"operator {op} not supported here")

    def _compare_modified(self, v: str, c: nodes.Check, ftype: str) -> str:
        assert isinstance(c.right, nodes.ValueList)
        subs = [self.compare(v, nodes.Check(c.left, c.op, item), ftype)
                for item in c.right.items]
        if not subs:
            return "False"
        if c.modifier == "anyof":
            return "(" + " or ".join(subs) + ")"
        if c.modifier == "allof":
            return "(" + " and ".join(subs) + ")"
        return "((" + ") + (".join(subs) + ") == 1)"

    def _lit(self, value: Any) -> str:
        if isinstance(value, bool | int | float | str | bytes) or value is None:
            return repr(value)
        return self.unit.const(value)

    def _compare_bytes(self, v: str, op: str, k: str) -> str:
        b = f"(_a := _as_bytes({v})) is not None and "
        if op == "=":
            return f"({b}_a == {k})"
        if op == "!=":
            return f"({b}_a != {k})"
        if op in ("contains", "bcontains"):
            return f"({b}{k} in _a)"
        if op in ("startswith", "bstartswith"):
            return f"({b}_a.startswith({k}))"
        if op == "endswith":
            return f"({b}_a.endswith({k}))"
        raise ValueError(f"operator {op} not supported on buffers")

    def _compare_list(self, v: str, op: str, right: nodes.ValueList, ftype: str) -> str:
        texts = [item.text for item in right.items]
        if op == "pmatch":
            k = self.unit.const(runtime.PathMatcher(texts), ("pmatch", tuple(texts)))
            return f"{k}({v})"
        if not texts:
            return "False"
        if ftype == "ipnet":
            nets = tuple(checks.convert(t, "ipnet", op) for t in texts)
            k = self.unit.const(nets)
            return f"_in_nets({v}, {k})"
        vtype = "string" if ftype == "list" else ftype
        values = frozenset(checks.convert(t, vtype, op) for t in texts)
        k = self.unit.const(values, ("set", vtype, tuple(sorted(map(repr, values)))))
        if ftype == "ipaddr":
            return f"(_ip({v}) in {k})"
        if ftype == "buffer":
            return f"(_as_bytes({v}) in {k})"
        if ftype == "list":
            fn = "_all_in" if op == "in" else "_any_in"
            return f"((_a := {v}) is not None and {fn}(_a, {k}))"
        return f"({v} in {k})"

    def _compare_fields(self, v: str, c: nodes.Check, ftype: str) -> str:
        assert isinstance(c.right, nodes.FieldValue)
        r = self.value_code(c.right.operand)
        op = c.op
        pre = f"(_a := {v}) is not None and (_b := {r}) is not None and "
        if ftype in ("ipaddr", "ipnet"):
            pre = f"(_a := _ip({v})) is not None and (_b := _ip({r})) is not None and "
        expr = {
            "=": "_a == _b", "!=": "_a != _b", "<": "_a < _b", "<=": "_a <= _b",
            ">": "_a > _b", ">=": "_a >= _b", "contains": "_b in _a",
            "icontains": "_b.lower() in _a.lower()", "startswith": "_a.startswith(_b)",
            "endswith": "_a.endswith(_b)", "in": "_a == _b", "intersects": "_a == _b",
            "glob": "_glob(_b)(_a) is not None", "iglob": "_iglob(_b)(_a) is not None",
        }.get(op)
        if expr is None:
            raise ValueError(f"operator {op} does not support a field on the right")
        return f"({pre}{expr})"


_UNSET = object()  # a lazy field local not read yet (None is a value: the field is missing)


def _glob_cached():
    from functools import lru_cache

    @lru_cache(maxsize=1024)
    def glob(p):
        return runtime.glob_regex(p).fullmatch

    @lru_cache(maxsize=1024)
    def iglob(p):
        return runtime.glob_regex(p, True).fullmatch
    return glob, iglob


def _base_namespace() -> dict[str, Any]:
    glob, iglob = _glob_cached()
    return {
        "_ip": runtime.ip, "_in_nets": runtime.in_nets, "_as_bytes": runtime.as_bytes,
        "_any_of": runtime.any_of, "_all_in": runtime.all_in, "_any_in": runtime.any_in,
        "_t_tolower": runtime.t_tolower, "_t_toupper": runtime.t_toupper,
        "_t_b64": runtime.t_b64, "_t_basename": runtime.t_basename, "_t_len": runtime.t_len,
        "_glob": glob, "_iglob": iglob, "_M": _UNSET,
    }


def _macro_uses(expr: nodes.Expr, counter: Counter) -> None:
    for node in nodes.walk(expr):
        if isinstance(node, nodes.Macro):
            counter[node.name] += 1


@dataclass
class CompiledRules:
    """The generated matchers: one function per event type plus one for other types."""

    by_type: dict[str, Any]
    fallback: Any
    source: str


def compile_rules(exprs: list[tuple[int, nodes.Expr, frozenset[str] | None]],
                  first: bool = False) -> CompiledRules:
    """Generate and compile matchers for (rule index, expanded condition, event types).

    With `first`, each matcher returns as soon as one rule matches (Falco's
    `rule_matching: first`), so the later rules are not even evaluated."""
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 20000))
    try:
        return _compile(exprs, first)
    finally:
        sys.setrecursionlimit(old_limit)


def _compile(exprs, first: bool) -> CompiledRules:
    unit = _Unit()
    types: set[str] = set()
    for _i, _e, ets in exprs:
        if ets:
            types |= ets
    functions: list[str] = []
    names: dict[str | None, str] = {}
    for n, evtype in enumerate([None, *sorted(types)]):
        members = [(i, e) for i, e, ets in exprs
                   if ets is None or (evtype is not None and evtype in ets)]
        fname = f"_match_{n}"
        names[evtype] = fname
        functions.append(_function(unit, fname, evtype, members, first))
    src = "\n".join(unit.helpers + functions)
    namespace = _base_namespace()
    namespace.update(unit.consts)
    code = compile(src, "<enforcer rules>", "exec")
    exec(code, namespace)  # our own generated code, built from parsed rules
    by_type = {t: namespace[f] for t, f in names.items() if t is not None}
    return CompiledRules(by_type, namespace[names[None]], src)


def _function(unit: _Unit, fname: str, evtype: str | None,
              members: list[tuple[int, nodes.Expr]], first: bool = False) -> str:
    uses: Counter = Counter()
    for _i, e in members:
        _macro_uses(e, uses)
    gen = _FunctionGen(unit, evtype, {name for name, n in uses.items() if n > 1})
    body: list[str] = []
    for i, e in members:
        code = gen.emit(e)
        if code is False:
            continue
        cond = "True" if code is True else code
        hit = f"return [{i}]" if first else f"h.append({i})"
        body.append(f"    try:\n        if {cond}:\n            {hit}\n"
                    f"    except Exception:\n        _failed({i})\n")
    head = [f"def {fname}(e, _failed):", "    g = e.get", "    h = []",
            *gen.prelude()]
    return "\n".join(head) + "\n" + "".join(body) + "    return h\n"


def compile_check(check: nodes.Check):
    """One check as a function event -> bool (no event-type folding)."""
    unit = _Unit()
    gen = _FunctionGen(unit, None, set())
    code = gen.check(check)
    if isinstance(code, bool):
        return (lambda _e: True) if code else (lambda _e: False)
    src = "\n".join(["def _check(e):", "    g = e.get", *gen.prelude(),
                     f"    return {code}"]) + "\n"
    namespace = _base_namespace()
    namespace.update(unit.consts)
    exec(compile(src, "<enforcer check>", "exec"), namespace)
    return namespace["_check"]
