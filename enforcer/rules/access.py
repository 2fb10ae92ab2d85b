"""How a field reference reads its value from an event (shared by conditions and outputs).

Events are mappings keyed by Falco field names (see enforcer.event). Most fields are one
`get`; the exceptions are arguments: `proc.aname[2]` (an explicit "proc.aname[2]" key wins,
else index 0 is `proc.name` and N is element N-1 of the parent-first "proc.aname" array),
and `evt.arg[NAME]` / `evt.arg.NAME`, which are the same argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from enforcer.rules import fields as registry
from enforcer.rules import nodes


def is_ancestor_any(f: nodes.Field) -> bool:
    """`proc.aname` without an index: true for comparisons matching any ancestor."""
    spec = registry.lookup(f.name)
    return bool(spec and spec.ancestor_of and f.arg is None)


def simple_key(f: nodes.Field) -> str | None:
    """The one event key this field reads, when a plain `get` is enough."""
    spec = registry.lookup(f.name)
    if f.arg is None:
        return f.name
    if spec is not None and spec.ancestor_of:
        return None
    if f.name in ("evt.arg", "evt.rawarg"):
        return None
    return f.key


def getter(f: nodes.Field) -> Callable[[Any], Any]:
    """A function event -> value (None when missing)."""
    key = simple_key(f)
    if key is not None:
        return lambda e: e.get(key)
    spec = registry.lookup(f.name)
    explicit = f.key
    if spec is not None and spec.ancestor_of:
        index = int(f.arg or 0)
        base = spec.ancestor_of
        if index == 0:
            def own(e):
                v = e.get(explicit)
                return e.get(base) if v is None else v
            return own
        name = f.name
        i = index - 1

        def ancestor(e):
            v = e.get(explicit)
            if v is not None:
                return v
            chain = e.get(name)
            if isinstance(chain, list | tuple) and i < len(chain):
                return chain[i]
            return None
        return ancestor
    # evt.arg[x] is evt.arg.x (and evt.rawarg likewise)
    dotted = f"{f.name}.{f.arg}"

    def arg(e):
        v = e.get(explicit)
        return e.get(dotted) if v is None else v
    return arg


def render(value: Any) -> str:
    """A value as Falco prints it in an output string."""
    if value is None:
        return "<NA>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, list | tuple):
        return ",".join(render(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
