"""YAML loaded with the position of every key and value, so that policy problems can be
reported as FILE:LINE:COL."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[Any, ...]


@dataclass
class Located:
    """A document as plain Python data plus 1-based (line, column) of each node by path.

    `values[path]` is where the value at `path` starts; `keys[path]` is where the mapping
    key that leads to `path` is written (used for "unknown key" messages)."""

    data: Any
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path, key: bool = False) -> tuple[int, int]:
        """Position of `path`, or of its closest located ancestor."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return self.values.get((), (1, 1))


def yaml_problem(exc: yaml.YAMLError) -> tuple[int, int, str]:
    """(line, column, problem) of a YAML syntax error, 1-based, for a Diagnostic."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    return line, col, str(getattr(exc, "problem", None) or exc)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def load_located(text: str) -> Located:
    """Parse one YAML document. Raises yaml.YAMLError (with problem_mark) on bad syntax."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        located = Located(data=None)
        if root is not None:
            located.data = _walk(loader, root, (), located)
        return located
    finally:
        loader.dispose()


def _walk(loader: yaml.SafeLoader, node: yaml.Node, path: Path, out: Located) -> Any:
    out.values[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                key = str(key)
            out.keys[path + (key,)] = _mark(key_node)
            result[key] = _walk(loader, value_node, path + (key,), out)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_walk(loader, item, path + (i,), out) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
