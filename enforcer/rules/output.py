"""Rule output formats: `%field` and `%field[arg]` tokens, rendered with `<NA>` for missing
values, as Falco's formatter does."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from enforcer.rules import access, nodes
from enforcer.rules import fields as registry

_TOKEN = re.compile(r"%([a-zA-Z][a-zA-Z0-9_]*(?:\.[a-zA-Z0-9_]+)+)(\[[^\]]*\])?")
CONTAINER_INFO = "%container.info"


class OutputError(Exception):
    def __init__(self, message: str, pos: int, unknown_field: bool = False):
        self.pos = pos
        self.unknown_field = unknown_field
        super().__init__(message)


@dataclass(frozen=True)
class OutputFormat:
    """A compiled output: literal text and fields, in order."""

    text: str
    parts: tuple[str | nodes.Field, ...]

    @property
    def fields(self) -> tuple[nodes.Field, ...]:
        seen: dict[str, nodes.Field] = {}
        for p in self.parts:
            if isinstance(p, nodes.Field):
                seen.setdefault(p.key, p)
        return tuple(seen.values())


def strip_container_info(text: str) -> tuple[str, bool]:
    """Falco drops the deprecated `%container.info` token (and warns)."""
    if CONTAINER_INFO not in text:
        return text, False
    cleaned = re.sub(r"\s*%container\.info", "", text)
    return cleaned.strip(), True


def compile_output(text: str) -> OutputFormat:
    """Parse an output format; raise OutputError for an unknown field."""
    parts: list[str | nodes.Field] = []
    last = 0
    for m in _TOKEN.finditer(text):
        name, arg = m.group(1), m.group(2)
        arg_text = arg[1:-1] if arg else None
        why = registry.check(name, arg_text)
        if why:
            raise OutputError(f"invalid formatting token %{name}{arg or ''}: {why}",
                              m.start(), unknown_field="nonexistent" in why)
        if m.start() > last:
            parts.append(text[last:m.start()])
        parts.append(nodes.Field(name, arg_text, m.start()))
        last = m.end()
    if last < len(text):
        parts.append(text[last:])
    return OutputFormat(text, tuple(parts))


def _output_getter(f: nodes.Field):
    # libsinsp extracts `proc.aname` (no index) as the process itself, index 0; only
    # comparisons walk the ancestors.
    if access.is_ancestor_any(f):
        return access.getter(nodes.Field(f.name, "0"))
    return access.getter(f)


class Renderer:
    """Renders one compiled output for events.

    The output is compiled once into one generated function (every field read once, in
    order, a plain `get` where one is enough, literals inlined, and the common value, a
    str, passed through without a call): rendering is on the path of every match."""

    def __init__(self, fmt: OutputFormat):
        self.format = fmt
        # event -> (output text, output_fields)
        self.render: Callable[[Any], tuple[str, dict[str, Any]]] = _compile_renderer(fmt)


def _compile_renderer(fmt: OutputFormat) -> Callable[[Any], tuple[str, dict[str, Any]]]:
    """event -> (output text, output_fields), as generated Python: the text is each part
    rendered as access.render does, the fields each value made JSON-able, in field order."""
    namespace: dict[str, Any] = {"_r": access.render, "_j": _jsonable, "_s": str}
    reads: list[str] = []
    var: dict[str, str] = {}
    for i, f in enumerate(fmt.fields):
        v = var[f.key] = f"v{i}"
        key = None if access.is_ancestor_any(f) else access.simple_key(f)
        if key is not None:
            reads.append(f"    {v} = g({key!r})")
        else:
            namespace[f"_g{i}"] = _output_getter(f)
            reads.append(f"    {v} = _g{i}(e)")
    text: list[str] = []
    for p in fmt.parts:
        if isinstance(p, str):
            text.append(repr(p))
        else:
            v = var[p.key]
            text.append(f"({v} if {v}.__class__ is _s else _r({v}))")
    fields = ", ".join(f"{f.key!r}: ({v} if {v}.__class__ is _s else _j({v}))"
                       for f in fmt.fields for v in (var[f.key],))
    joined = f"''.join(({', '.join(text)},))" if text else "''"
    src = "\n".join(["def render(e):", "    g = e.get", *reads,
                     f"    return {joined}, {{{fields}}}", ""])
    exec(compile(src, "<enforcer output>", "exec"), namespace)  # noqa: S102 - our own text
    return namespace["render"]


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, tuple):
        return list(v)
    return v
