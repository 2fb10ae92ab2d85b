"""Rule files as YAML nodes with positions, so every problem is reported at FILE:LINE:COL.

PyYAML's composer gives each node its start and end marks. A condition's offset is mapped
back into the file through the scalar's raw text: in plain and block scalars (and, up to
escapes, in quoted ones) the non-blank characters of the value appear in the same order in
the file, so counting them finds the character.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_BLANKS = " \t\r\n"


@dataclass
class SourceFile:
    """One rules file: its name as given and its text."""

    name: str
    text: str
    _line_starts: list[int] = field(default_factory=list, repr=False)

    def line_col(self, index: int) -> tuple[int, int]:
        """1-based line and column of a character index."""
        if not self._line_starts:
            starts = [0]
            for i, c in enumerate(self.text):
                if c == "\n":
                    starts.append(i + 1)
            self._line_starts = starts
        line = bisect.bisect_right(self._line_starts, index) - 1
        return line + 1, index - self._line_starts[line] + 1

    def line_text(self, line: int) -> str:
        """The text of a 1-based line (for error context)."""
        lines = self.text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else ""


@dataclass(frozen=True)
class Where:
    """A node in a source file."""

    source: SourceFile
    node: Node

    @property
    def file(self) -> str:
        return self.source.name

    def start(self) -> tuple[int, int]:
        """1-based line and column where the node starts."""
        m = self.node.start_mark
        return m.line + 1, m.column + 1

    def locate(self, offset: int) -> tuple[int, int]:
        """1-based line and column of character `offset` of this scalar's value."""
        node = self.node
        if not isinstance(node, ScalarNode):
            return self.start()
        value = node.value
        offset = min(offset, len(value))
        wanted = sum(1 for c in value[:offset] if c not in _BLANKS)
        text = self.source.text
        i = node.start_mark.index
        end = node.end_mark.index
        if node.style in ("|", ">"):
            nl = text.find("\n", i, end)
            i = end if nl < 0 else nl + 1
        elif node.style in ("'", '"'):
            i += 1
        seen = 0
        while i < end:
            c = text[i]
            if c not in _BLANKS:
                if seen == wanted:
                    return self.source.line_col(i)
                seen += 1
            i += 1
        return self.source.line_col(max(min(end, len(text)) - 1, 0))


def compose(source: SourceFile) -> list[Node | None]:
    """Every YAML document of the file as a node tree (None for an empty document)."""
    return list(yaml.compose_all(source.text, Loader=yaml.SafeLoader))


_constructor = SafeConstructor()


def to_python(node: Node) -> Any:
    """The plain Python value of a node (YAML 1.1 scalars, as Falco's decoder accepts)."""
    return _constructor.construct_object(node, deep=True)


def mapping_items(node: MappingNode) -> list[tuple[str, Node, Node]]:
    """(key text, key node, value node) for each entry of a mapping."""
    out = []
    for k, v in node.value:
        key = k.value if isinstance(k, ScalarNode) else str(to_python(k))
        out.append((str(key), k, v))
    return out


def is_null(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag.endswith(":null"))


def is_scalar(node: Node) -> bool:
    return isinstance(node, ScalarNode)


def is_seq(node: Node) -> bool:
    return isinstance(node, SequenceNode)


def is_map(node: Node) -> bool:
    return isinstance(node, MappingNode)
