"""Falco's `-o KEY=VALUE`: set one configuration key from the command line.

The key is Falco's: dotted names, `[N]` to index a list and `[]` to append to one, a
backslash to escape `.`, `[`, `]` or `\\` in a name (`-o 'append_output[]={match: {source:
syscall}, extra_output: "on CPU %evt.cpu"}'`, `-o webserver.listen_port=8765`,
`-o 'rules_files[]=/etc/falco/more_rules.yaml'`). A value between `{}` or `[]` is YAML; any
other value is one YAML scalar (`true`, `8765`, `text`), as Falco converts it when read.
Overrides apply after the file and its `config_files`, in command-line order."""

from __future__ import annotations

from typing import Any

import yaml

Key = tuple[str | int | None, ...]  # None: append to the list


class OverrideError(ValueError):
    """A `-o` that cannot be applied; `column` is 1-based in the option's text."""

    def __init__(self, message: str, column: int = 1):
        super().__init__(message)
        self.column = column


def parse_override(text: str) -> tuple[Key, Any]:
    """The key path and value of `-o text`. Raises OverrideError."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise OverrideError("not KEY=VALUE (Falco's syntax: key.subkey=value, "
                            "list[]=value appends, list[0].key=value)")
    return parse_key(key), parse_value(raw, len(key) + 2)


def parse_key(key: str) -> Key:
    """Falco's key language: NodeKey ('.' NodeKey)*, NodeKey := name ('[' int? ']')*."""
    path: list[str | int | None] = []
    name = ""
    named = False  # a name was started since the last separator
    i = 0
    while i < len(key):
        c = key[i]
        if c == "\\":
            if i + 1 >= len(key) or key[i + 1] not in ".[]\\":
                raise OverrideError(f"bad escape in key {key!r}: only \\. \\[ \\] \\\\ are "
                                    "allowed", i + 1)
            name += key[i + 1]
            named = True
            i += 2
            continue
        if c == ".":
            if not named and (not path or key[i - 1] != "]"):
                raise OverrideError(f"empty name in key {key!r}", i + 1)
            if named:
                path.append(name)
            name, named = "", False
        elif c == "[":
            if named:
                path.append(name)
                name, named = "", False
            elif not path:
                raise OverrideError(f"key {key!r} starts with an index", i + 1)
            close = key.find("]", i)
            if close < 0:
                raise OverrideError(f"unclosed '[' in key {key!r}", i + 1)
            index = key[i + 1:close]
            if index == "":
                path.append(None)
            elif index.isdigit():
                path.append(int(index))
            else:
                raise OverrideError(f"expected a number or nothing between [] in key {key!r}, "
                                    f"found {index!r}", i + 2)
            i = close
            if i + 1 < len(key) and key[i + 1] not in ".[":
                raise OverrideError(f"expected '.' or '[' after ']' in key {key!r}", i + 2)
        else:
            name += c
            named = True
        i += 1
    if named:
        path.append(name)
    elif key.endswith("."):
        raise OverrideError(f"key {key!r} ends with '.'", len(key))
    return tuple(path)


def parse_value(raw: str, column: int) -> Any:
    """A YAML flow mapping or list, else one scalar (as Falco converts a string when read)."""
    text = raw.strip()
    if text == "":
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        if text[0] in "{[":
            raise OverrideError(f"the value is not valid YAML: {getattr(exc, 'problem', exc)}",
                                column) from None
        return raw
    if isinstance(value, dict | list) and text[0] not in "{[":
        return raw  # `a: b` or `- x` as a plain value: Falco keeps it as text
    return value


def apply_override(data: dict[str, Any], key: Key, value: Any) -> Key:
    """Set `key` in `data` (creating mappings and lists on the way); returns the key with
    each `[]` resolved to the index it appended at."""
    node: Any = data
    resolved: list[str | int] = []
    for position, part in enumerate(key):
        last = position == len(key) - 1
        nxt = None if last else key[position + 1]
        fresh: Any = value if last else ({} if isinstance(nxt, str) else [])
        if isinstance(part, str):
            if not isinstance(node, dict):
                raise OverrideError(f"{_show(resolved)} is not a mapping; cannot set "
                                    f"{part!r} in it")
            if last or part not in node or node[part] is None:
                node[part] = fresh
            node = node[part]
            resolved.append(part)
            continue
        if not isinstance(node, list):
            raise OverrideError(f"{_show(resolved)} is not a list; cannot index it")
        index = len(node) if part is None else part
        if index > len(node):
            raise OverrideError(f"{_show(resolved)} has {len(node)} items; [{index}] is past "
                                "its end (use [] to append)")
        if index == len(node):
            node.append(fresh)
        elif last:
            node[index] = fresh
        node = node[index]
        resolved.append(index)
    return tuple(resolved)


def _show(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "the configuration"
