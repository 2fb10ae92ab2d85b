"""Warnings about conditions that load but probably do not mean what they say (Falco's
filter warning resolver and compiler warnings)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from enforcer.rules import fields as registry
from enforcer.rules import nodes

_FIELD_LIKE = re.compile(r"([a-zA-Z]+[a-zA-Z0-9_]*(?:\.[a-zA-Z]+[a-zA-Z0-9_]*)+)(?:\[(.*)\])?")
_TRANSFORMER_LIKE = re.compile(r"(?:tolower|toupper|b64|basename|len|val)\s*\(")
_REGEX_META = re.compile(r"[\\\[\](){}|*+?.^$]")


def _values(check: nodes.Check) -> Iterator[nodes.Value]:
    if isinstance(check.right, nodes.Value):
        yield check.right
    elif isinstance(check.right, nodes.ValueList):
        yield from check.right.items


def _simple_regex(pattern: str) -> bool:
    core = pattern
    core = core[1:] if core.startswith("^") else core
    core = core[:-1] if core.endswith("$") and not core.endswith("\\$") else core
    for affix in (".*", ".+", ".?"):
        if core.startswith(affix):
            core = core[2:]
        if core.endswith(affix):
            core = core[:-2]
    return not _REGEX_META.search(core)


def check_warnings(expr: nodes.Expr) -> list[tuple[int, str]]:
    """(offset, message) for each suspicious check in `expr` (macro bodies excluded)."""
    out: list[tuple[int, str]] = []
    stack: list[nodes.Expr] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.And | nodes.Or):
            stack.extend(reversed(node.children))
            continue
        if isinstance(node, nodes.Not):
            stack.append(node.child)
            continue
        if not isinstance(node, nodes.Check):
            continue
        f = node.field
        if f.name == "evt.dir" and node.op != "exists":
            out.append((node.pos, "usage of deprecated field 'evt.dir' has been detected in "
                                  "the rule condition; rules see exit events only"))
        for v in _values(node):
            text = v.text.strip()
            m = _FIELD_LIKE.fullmatch(text)
            if m and registry.lookup(m.group(1)) is not None and \
                    registry.check(m.group(1), m.group(2)) is None:
                out.append((v.pos, f"'{text}' may be a valid field misused as a const string "
                                   f"value; use val({text}) to compare with the field"))
            elif _TRANSFORMER_LIKE.match(text):
                out.append((v.pos, f"'{text}' may be a valid field transformer misused as a "
                                   "const string value"))
        if node.op == "regex" and isinstance(node.right, nodes.Value) and \
                _simple_regex(node.right.text):
            out.append((node.right.pos, f"regex '{node.right.text}' has no special "
                        "characters; a simpler operator (=, startswith, endswith, contains) "
                        "is faster"))
    return out
