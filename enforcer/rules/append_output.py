"""Extra output appended to matching rules, as Falco's `append_output` configuration does.

Each entry may restrict itself with `match` (`rule`: exact name, `source`, `tags`: the rule
must have ALL of them) and adds `extra_output` (a format appended to the rule's output
with one space) and/or `extra_fields` (`{key: format}` entries rendered as text, or a bare
field name whose typed value is added under its own name) to the alert's output_fields.
Several matching entries apply in configuration order.

`suggested_output: true` appends the fields Falco's container plugin suggests, each as
` foo_bar=%foo.bar`, after the entry's extra_output, to the rules of the syscall source
(the only source with those fields here): container.id, container.name,
container.image.repository, container.image.tag, k8s.pod.name, k8s.ns.name. As in Falco,
they are appended even when the rule's output already shows one of them, and, being
%fields of the output, they land in output_fields too. Falco's shipped falco.yaml has
`append_output: [{suggested_output: true}]`, so that is DEFAULT_APPEND_OUTPUT, what the
agent and `enforcer replay` use when no append_output file is given; a file replaces it
(`append_output: []` turns it off).

A file in Falco's shape is read by `load_append_output(path)`:

    append_output:
      - match: {source: syscall, tags: [container]}
        extra_output: "image=%container.image.repository"
        extra_fields:
          - pod: "%k8s.pod.name"
          - proc.pid
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import Node

from enforcer.errors import Diagnostic, RuleError
from enforcer.rules import nodes
from enforcer.rules.output import OutputError, OutputFormat, compile_output
from enforcer.rules.ruleset import Rule
from enforcer.rules.yamlsource import (
    SourceFile,
    Where,
    compose,
    is_map,
    is_null,
    is_scalar,
    is_seq,
    mapping_items,
)


@dataclass(frozen=True)
class ExtraField:
    """One `extra_fields` entry: `format` is rendered as text; a raw field (`raw` set) adds
    the field's typed value under its own name."""

    key: str
    format: OutputFormat | None = None
    raw: nodes.Field | None = None


@dataclass(frozen=True)
class AppendOutput:
    """One `append_output` entry (empty match values match every rule)."""

    rule: str = ""
    source: str = ""
    tags: frozenset[str] = frozenset()
    extra_output: str = ""
    extra_fields: tuple[ExtraField, ...] = ()
    suggested_output: bool = False

    def applies_to(self, rule: Rule) -> bool:
        """True when the entry's match (rule name, source, every tag) selects `rule`."""
        return ((not self.rule or self.rule == rule.name)
                and (not self.source or self.source == rule.source)
                and self.tags <= set(rule.tags))


# The fields the container plugin marks as suggested output, in the order Falco appends
# them (the plugin's field table), and the sources that have them.
SUGGESTED_FIELDS = ("container.id", "container.name", "container.image.repository",
                    "container.image.tag", "k8s.pod.name", "k8s.ns.name")
SUGGESTED_SOURCES = frozenset({"syscall"})
DEFAULT_APPEND_OUTPUT = (AppendOutput(suggested_output=True),)


def suggested_format(field: str) -> str:
    """Falco's form of a suggested field in the output text: `foo_bar=%foo.bar`."""
    return f"{field.replace('.', '_')}=%{field}"


def extended_output(rule: Rule, entries: tuple[AppendOutput, ...] | list[AppendOutput]) -> str:
    """The rule's output with every matching entry's extra_output, then its suggested
    fields, appended, one space before each, in order."""
    text = rule.output_format.text if rule.output_format is not None else rule.output
    for e in entries:
        if not e.applies_to(rule):
            continue
        if e.extra_output:
            text = f"{text} {e.extra_output}"
        if e.suggested_output and rule.source in SUGGESTED_SOURCES:
            for field in SUGGESTED_FIELDS:
                text = f"{text} {suggested_format(field)}"
    return text


def extra_fields_for(rule: Rule, entries: tuple[AppendOutput, ...] | list[AppendOutput],
                     ) -> list[ExtraField]:
    """The extra fields of every entry matching `rule`, in order."""
    return [f for e in entries if e.applies_to(rule) for f in e.extra_fields]


_KEYS = {"match", "extra_output", "extra_fields", "suggested_output"}
_MATCH_KEYS = {"rule", "source", "tags"}


class _Reader:
    def __init__(self, source: SourceFile):
        self.source = source
        self.diags: list[Diagnostic] = []

    def error(self, node: Node, message: str, offset: int | None = None) -> None:
        where = Where(self.source, node)
        line, col = where.start() if offset is None else where.locate(offset)
        self.diags.append(Diagnostic(self.source.name, line, col, message))

    def string(self, node: Node, what: str) -> str | None:
        if not is_scalar(node) or is_null(node):
            self.error(node, f"{what} must be a string")
            return None
        return str(node.value)

    def fmt(self, node: Node, what: str) -> OutputFormat | None:
        text = self.string(node, what)
        if text is None:
            return None
        try:
            return compile_output(text)
        except OutputError as exc:
            self.error(node, f"{what}: {exc}", exc.pos)
            return None

    def entries(self, root: Node) -> list[AppendOutput]:
        if not is_map(root):
            self.error(root, "expected a mapping with an `append_output:` list")
            return []
        seq = None
        for key, knode, value in mapping_items(root):
            if key == "append_output":
                seq = value
            else:
                self.error(knode, f"unknown key '{key}': only `append_output` is read here")
        if seq is None:
            self.error(root, "missing `append_output:` list")
            return []
        if is_null(seq):
            return []
        if not is_seq(seq):
            self.error(seq, "`append_output` must be a list of entries")
            return []
        return [e for e in (self.entry(n) for n in seq.value) if e is not None]

    def entry(self, node: Node) -> AppendOutput | None:
        if not is_map(node):
            self.error(node, "an append_output entry must be a mapping "
                             "(match, extra_output, extra_fields, suggested_output)")
            return None
        before = len(self.diags)
        match: dict[str, object] = {}
        extra_output = ""
        extra_fields: tuple[ExtraField, ...] = ()
        suggested = False
        for key, knode, value in mapping_items(node):
            if key not in _KEYS:
                self.error(knode, f"unknown key '{key}' in an append_output entry "
                                  f"(expected one of: {', '.join(sorted(_KEYS))})")
            elif key == "match":
                match = self.match(value)
            elif key == "extra_output":
                fmt = self.fmt(value, "extra_output")
                extra_output = fmt.text if fmt is not None else ""
            elif key == "extra_fields":
                extra_fields = self.fields(value)
            else:  # suggested_output
                flag = self.boolean(value, "suggested_output")
                suggested = bool(flag)
        if len(self.diags) > before:
            return None
        return AppendOutput(extra_output=extra_output, extra_fields=extra_fields,
                            suggested_output=suggested, **match)

    def boolean(self, node: Node, what: str) -> bool | None:
        if not is_scalar(node) or node.tag != "tag:yaml.org,2002:bool":
            self.error(node, f"{what} must be true or false")
            return None
        return str(node.value).lower() in ("true", "yes", "on")

    def match(self, node: Node) -> dict[str, object]:
        if is_null(node):
            return {}
        if not is_map(node):
            self.error(node, "`match` must be a mapping (rule, source, tags)")
            return {}
        out: dict[str, object] = {}
        for key, knode, value in mapping_items(node):
            if key not in _MATCH_KEYS:
                self.error(knode, f"unknown key '{key}' in match (expected rule, source "
                                  "or tags)")
            elif key == "tags":
                if not is_seq(value) or not all(is_scalar(t) and not is_null(t)
                                                for t in value.value):
                    self.error(value, "match.tags must be a list of tag names")
                else:
                    out["tags"] = frozenset(str(t.value) for t in value.value)
            else:
                text = self.string(value, f"match.{key}")
                if text is not None:
                    out[key] = text
        return out

    def fields(self, node: Node) -> tuple[ExtraField, ...]:
        if not is_seq(node):
            self.error(node, "extra_fields must be a list of `key: format` entries or "
                             "field names")
            return ()
        out: list[ExtraField] = []
        seen: set[str] = set()
        for item in node.value:
            if is_map(item) and len(item.value) == 1:
                (key, knode, value), = mapping_items(item)
                fmt = self.fmt(value, f"extra field '{key}'")
                field = ExtraField(key, format=fmt) if fmt is not None else None
            elif is_scalar(item) and not is_null(item):
                key, knode = str(item.value), item
                field = self.raw(item, key)
            else:
                self.error(item, "an extra_fields entry is `key: format` or a field name")
                continue
            if key in seen:  # Falco refuses a key defined twice in one entry
                self.error(knode, f"extra field '{key}' is defined twice in this entry")
                continue
            seen.add(key)
            if field is not None:
                out.append(field)
        return tuple(out)

    def raw(self, node: Node, name: str) -> ExtraField | None:
        try:
            fmt = compile_output("%" + name)
        except OutputError as exc:
            self.error(node, f"extra field: {exc}")
            return None
        if len(fmt.parts) != 1 or not isinstance(fmt.parts[0], nodes.Field):
            self.error(node, f"extra field '{name}' is not a field name (write "
                             "`key: format` for a formatted value)")
            return None
        return ExtraField(name, raw=fmt.parts[0])


def parse_append_output(text: str, name: str) -> list[AppendOutput]:
    """Entries of an `append_output:` document; RuleError lists every problem, located."""
    source = SourceFile(name, text)
    try:
        docs = [d for d in compose(source) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise RuleError([Diagnostic(name, line, col, f"invalid YAML: {exc.problem}")]) from None
    if len(docs) != 1:
        raise RuleError([Diagnostic(name, 1, 1, "expected one YAML document with an "
                                                "`append_output:` list")])
    reader = _Reader(source)
    entries = reader.entries(docs[0])
    if reader.diags:
        raise RuleError(reader.diags)
    return entries


def load_append_output(path: str | Path) -> list[AppendOutput]:
    """Read an append_output file; RuleError (FILE:LINE:COL) when it is invalid or
    unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise RuleError([Diagnostic(str(path), 1, 1, f"cannot read: {why}")]) from None
    return parse_append_output(text, str(path))
