"""Rule output formats: `%field` and `%field[arg]` tokens, rendered with `<NA>` for missing
values, as Falco's formatter does."""

from __future__ import annotations

import re
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
    """Renders one compiled output for events."""

    def __init__(self, fmt: OutputFormat):
        self.format = fmt
        self._parts = [(p, None) if isinstance(p, str) else (None, p.key) for p in fmt.parts]
        self._fields = [(f.key, _output_getter(f)) for f in fmt.fields]

    def render(self, event: Any) -> tuple[str, dict[str, Any]]:
        """(output text, output_fields) for an event."""
        values = {key: get(event) for key, get in self._fields}
        render = access.render
        text = "".join(lit if key is None else render(values[key]) for lit, key in self._parts)
        return text, {k: _jsonable(v) for k, v in values.items()}


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, tuple):
        return list(v)
    return v
