"""Read rule files item by item into the collector, with Falco's append/override semantics.

This is the first half of loading (Falco's reader + collector): structure, keys, types,
appends and overrides. Conditions are not parsed here; `loader` compiles what this module
collects. As in Falco, reading a file stops at its first error (later items of that file
are not read); warnings never stop it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from yaml.nodes import Node, ScalarNode

from enforcer.errors import Diagnostic
from enforcer.priority import Priority
from enforcer.rules import fields as field_registry
from enforcer.rules.mapped import MappedText
from enforcer.rules.yamlsource import (
    SourceFile,
    Where,
    compose,
    is_map,
    is_null,
    is_scalar,
    is_seq,
    mapping_items,
    to_python,
)

# The Falco engine version whose rules language this engine implements. Rule files that
# require a newer engine are refused, as Falco does.
ENGINE_VERSION = (0, 57, 0)

KNOWN_SOURCES = frozenset({"syscall"})

LIST_KEYS = {"list", "items", "append", "override"}
MACRO_KEYS = {"macro", "condition", "append", "override"}
RULE_KEYS = {"rule", "condition", "output", "desc", "priority", "tags", "enabled", "source",
             "exceptions", "append", "override", "warn_evttypes", "skip-if-unknown-filter",
             "capture", "capture_duration"}
RULE_APPENDABLE = ("condition", "output", "desc", "tags", "exceptions")
RULE_REPLACEABLE = ("condition", "output", "desc", "priority", "tags", "exceptions", "enabled",
                    "capture", "capture_duration", "warn_evttypes", "skip-if-unknown-filter")
EXCEPTION_OPS = ("=", "==", "!=", "<", "<=", ">", ">=", "contains", "icontains", "bcontains",
                 "startswith", "bstartswith", "endswith", "glob", "iglob", "regex", "in",
                 "intersects", "pmatch")
SCALAR_EXCEPTION_OPS = ("in", "pmatch", "intersects")
MODIFIERS = ("oneof", "anyof", "allof")
_MODIFIABLE_OPS = ("=", "==", "!=", "contains", "icontains", "bcontains", "startswith",
                   "bstartswith", "endswith", "glob", "iglob", "regex")


def valid_comp(comp: str, scalar_field: bool = False) -> bool:
    """Whether an exception `comps` entry is an operator (optionally with a modifier)."""
    words = comp.split()
    if len(words) == 2:
        return words[0] in _MODIFIABLE_OPS and words[1] in MODIFIERS
    if len(words) != 1:
        return False
    return comp in (SCALAR_EXCEPTION_OPS if scalar_field else EXCEPTION_OPS)

_LIST_NAME = re.compile(r"[^()\"'\s=,]+")
_MACRO_NAME = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*")
_SEMVER = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:[-+].*)?")


class _Stop(Exception):
    """The current file's first error was recorded; stop reading it."""


@dataclass
class ExceptionInfo:
    name: str
    fields: str | list[str] | None
    comps: str | list[str] | None
    values: list[Any]
    where: Where


@dataclass
class ListInfo:
    name: str
    items: list[str]
    index: int
    visibility: int
    where: Where
    used: bool = False


@dataclass
class MacroInfo:
    name: str
    cond: MappedText
    index: int
    visibility: int
    where: Where
    used: bool = False


@dataclass
class RuleInfo:
    name: str
    cond: MappedText
    output: str
    desc: str
    priority: Priority
    index: int
    where: Where
    output_where: Where
    tags: list[str] = field(default_factory=list)
    enabled: bool = True
    source: str = "syscall"
    exceptions: list[ExceptionInfo] = field(default_factory=list)
    warn_evttypes: bool = True
    skip_if_unknown_filter: bool = False
    capture: bool = False
    capture_duration: int = 0
    unknown_source: bool = False
    exceptions_where: Where | None = None


@dataclass
class PluginRequirement:
    name: str
    version: str
    alternatives: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Collector:
    """Everything read so far, across files, in definition order."""

    lists: dict[str, ListInfo] = field(default_factory=dict)
    macros: dict[str, MacroInfo] = field(default_factory=dict)
    rules: dict[str, RuleInfo] = field(default_factory=dict)
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)
    required_engine_version: tuple[int, int, int] = (0, 0, 0)
    required_plugins: list[PluginRequirement] = field(default_factory=list)


class _FileReader:
    def __init__(self, col: Collector, source: SourceFile):
        self.col = col
        self.source = source
        self.context = ""

    # -- diagnostics ------------------------------------------------------------------
    def _diag(self, node: Node | None, message: str, severity: str) -> Diagnostic:
        if node is None:
            line, column = 1, 1
        else:
            line, column = node.start_mark.line + 1, node.start_mark.column + 1
        text = f"{self.context}: {message}" if self.context else message
        return Diagnostic(self.source.name, line, column, text, severity)

    def error(self, node: Node | None, message: str) -> None:
        self.col.errors.append(self._diag(node, message, "error"))
        raise _Stop

    def warn(self, node: Node | None, message: str) -> None:
        self.col.warnings.append(self._diag(node, message, "warning"))

    def where(self, node: Node) -> Where:
        return Where(self.source, node)

    # -- typed access -----------------------------------------------------------------
    def scalar(self, node: Node, key: str) -> str:
        if not is_scalar(node):
            self.error(node, f"Value for key '{key}' is not a scalar")
        return node.value if not is_null(node) else ""

    def required(self, item: dict[str, tuple[Node, Node]], key: str, node: Node) -> Node:
        if key not in item:
            self.error(node, f"Item has no mapping for key '{key}'")
        value = item[key][1]
        if is_null(value):
            self.error(value, f"Mapping for key '{key}' is empty")
        if is_scalar(value) and value.value == "":
            self.error(value, f"Value for key '{key}' must be non-empty")
        return value

    def required_str(self, item, key: str, node: Node) -> tuple[str, Node]:
        value = self.required(item, key, node)
        return self.scalar(value, key), value

    def boolean(self, node: Node, key: str) -> bool:
        value = to_python(node) if is_scalar(node) else None
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            word = value.strip().lower()
            if word in ("true", "yes", "on", "y"):
                return True
            if word in ("false", "no", "off", "n"):
                return False
        self.error(node, f"Value for key '{key}' must be a boolean (true or false)")
        raise AssertionError  # unreachable

    def integer(self, node: Node, key: str) -> int:
        value = to_python(node) if is_scalar(node) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        self.error(node, f"Can't decode YAML scalar value for key '{key}' as an integer")
        raise AssertionError

    def str_list(self, node: Node, key: str) -> list[str]:
        if is_null(node):
            return []
        if not is_seq(node):
            self.error(node, f"Value for key '{key}' is not a sequence")
        out = []
        for sub in node.value:
            if not is_scalar(sub):
                self.error(sub, f"Value for key '{key}': sequence value is not scalar")
            out.append(sub.value)
        return out

    # -- reading ----------------------------------------------------------------------
    def read(self) -> None:
        try:
            docs = compose(self.source)
        except Exception as exc:  # yaml.YAMLError and decoding problems
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            line = mark.line + 1 if mark else 1
            column = mark.column + 1 if mark else 1
            problem = getattr(exc, "problem", None) or str(exc)
            self.col.errors.append(Diagnostic(
                self.source.name, line, column, f"invalid YAML: {problem}", "error"))
            return
        try:
            for doc in docs:
                if is_null(doc):
                    continue
                if is_scalar(doc):
                    self.error(doc, "Rules content is not yaml")
                if not is_seq(doc):
                    self.error(doc, "Rules content is not yaml array of objects")
                for item in doc.value:
                    if is_null(item):
                        continue
                    self.context = ""
                    if not is_map(item):
                        self.error(item, "Unexpected element type. "
                                   "Each element should be a yaml associative array.")
                    self.item(item)
        except _Stop:
            return

    def item(self, node: Node) -> None:
        entries = mapping_items(node)
        item = {k: (kn, vn) for k, kn, vn in entries}
        if "required_engine_version" in item:
            self.engine_version(item["required_engine_version"][1])
        elif "required_plugin_versions" in item:
            self.plugin_versions(item["required_plugin_versions"][1])
        elif "list" in item:
            self.list_item(node, item)
        elif "macro" in item:
            self.macro_item(node, item)
        elif "rule" in item:
            self.rule_item(node, item)
        else:
            self.warn(node, "Unknown top level item")

    def unknown_keys(self, item, allowed: set[str]) -> None:
        for key, (kn, _vn) in item.items():
            if key not in allowed:
                self.warn(kn, f"Unknown key '{key}'. The key will be ignored.")

    def engine_version(self, node: Node) -> None:
        text = self.scalar(node, "required_engine_version").strip()
        if re.fullmatch(r"\d+", text):
            version = (0, int(text), 0)
        else:
            m = _SEMVER.fullmatch(text)
            if not m:
                self.error(node, f"Unable to parse engine version '{text}' as a semver "
                           "string. Expected \"x.y.z\" semver format.")
            version = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
        if version > ENGINE_VERSION:
            have = ".".join(map(str, ENGINE_VERSION))
            self.error(node, f"Rules require engine version {text}, but engine version "
                       f"is {have}")
        self.col.required_engine_version = max(self.col.required_engine_version, version)

    def plugin_versions(self, node: Node) -> None:
        if not is_seq(node):
            self.error(node, "Value of required_plugin_versions must be a sequence")
        for entry in node.value:
            req = self.plugin_requirement(entry)
            alts = {k: v for k, _, v in mapping_items(entry)}.get("alternatives")
            if alts is not None:
                seen = {req.name}
                if not is_seq(alts):
                    self.error(alts, "Value of alternatives must be a sequence")
                for alt in alts.value:
                    a = self.plugin_requirement(alt)
                    if a.name in seen:
                        self.error(alt, f"Plugin '{a.name}' is listed more than once")
                    seen.add(a.name)
                    req.alternatives.append((a.name, a.version))
            self.col.required_plugins.append(req)

    def plugin_requirement(self, node: Node) -> PluginRequirement:
        if not is_map(node):
            self.error(node, "Entries of required_plugin_versions must be mappings")
        item = {k: (kn, vn) for k, kn, vn in mapping_items(node)}
        name, _ = self.required_str(item, "name", node)
        version, vnode = self.required_str(item, "version", node)
        if not _SEMVER.fullmatch(version.strip()):
            self.error(vnode, f"Invalid plugin version '{version}': expected x.y.z")
        return PluginRequirement(name, version)

    # -- lists ------------------------------------------------------------------------
    def list_item(self, node: Node, item) -> None:
        name, name_node = self.required_str(item, "list", node)
        self.context = f"list '{name}'"
        self.unknown_keys(item, LIST_KEYS)
        if not _LIST_NAME.fullmatch(name):
            self.warn(name_node, "List has an invalid name. List names should match a "
                      "regular expression: ^[^()\"'\\s=,]+$")
        if "items" not in item:
            self.error(node, "Item has no mapping for key 'items'")
        items = self.str_list(item["items"][1], "items")
        mode = self.override_mode(node, item, ("items",), ("items",))
        lists = self.col.lists
        if mode == "append":
            if name not in lists:
                self.error(node, "List uses 'append' or 'override.items: append' but no list "
                           "by that name already exists")
            info = lists[name]
            info.items.extend(items)
            info.visibility = len(lists)
        elif name in lists:
            info = lists[name]
            info.items = items
            info.visibility = len(lists)
            info.where = self.where(node)
        else:
            lists[name] = ListInfo(name, items, len(lists), len(lists) + 1, self.where(node))
            lists[name].visibility = len(lists)

    def override_mode(self, node, item, appendable, replaceable) -> str:
        """'append', 'replace' or 'define' for a list or macro item."""
        legacy = "append" in item and self.boolean(item["append"][1], "append")
        if "append" in item:
            if legacy:
                self.warn(item["append"][0], "'append' key is deprecated. Add an 'append' "
                          "entry (e.g. 'condition: append') under 'override' instead.")
        if "override" in item:
            if legacy:
                self.error(item["override"][0],
                           "Keys 'override' and 'append: true' cannot be used together.")
            ov = self.overrides(item["override"][1], appendable, replaceable)
            for key, (mode, knode) in ov.items():
                if key not in item:
                    self.error(knode, f"An {mode} override for '{key}' was specified but "
                               f"'{key}' is not defined")
            modes = {m for m, _ in ov.values()}
            return "append" if "append" in modes else "replace"
        return "append" if legacy else "define"

    def overrides(self, node, appendable, replaceable) -> dict[str, tuple[str, Node]]:
        if not is_map(node):
            self.error(node, "Value for key 'override' must be a mapping")
        out = {}
        for key, knode, vnode in mapping_items(node):
            mode = self.scalar(vnode, key).strip()
            if mode not in ("append", "replace"):
                self.error(vnode, f"Invalid override operation for key '{key}': '{mode}'. "
                           "Allowed values are: append replace")
            if mode == "append" and key not in appendable:
                if key in replaceable:
                    self.error(knode, f"Key '{key}' cannot be appended to, use 'replace' "
                               "instead")
                self.error(knode, f"Key '{key}' cannot be appended to")
            if mode == "replace" and key not in replaceable:
                self.error(knode, f"Key '{key}' cannot be replaced")
            out[key] = (mode, knode)
        return out

    # -- macros -----------------------------------------------------------------------
    def macro_item(self, node: Node, item) -> None:
        name, name_node = self.required_str(item, "macro", node)
        self.context = f"macro '{name}'"
        self.unknown_keys(item, MACRO_KEYS)
        if not _MACRO_NAME.fullmatch(name):
            self.warn(name_node, "Macro has an invalid name. Macro names should match a "
                      "regular expression: ^[a-zA-Z]+[a-zA-Z0-9_]*$")
        text, cnode = self.required_str(item, "condition", node)
        cond = MappedText.of(text, self.where(cnode))
        mode = self.override_mode(node, item, ("condition",), ("condition",))
        macros = self.col.macros
        if mode == "append":
            if name not in macros:
                self.error(node, "Macro uses 'append' or 'override.condition: append' but no "
                           "macro by that name already exists")
            info = macros[name]
            info.cond = info.cond.add(" ") + cond
            info.visibility = len(macros)
        elif name in macros:
            info = macros[name]
            info.cond = cond
            info.visibility = len(macros)
            info.where = self.where(node)
        else:
            macros[name] = MacroInfo(name, cond, len(macros), len(macros) + 1,
                                     self.where(node))

    # -- rules ------------------------------------------------------------------------
    def rule_item(self, node: Node, item) -> None:
        name, _ = self.required_str(item, "rule", node)
        self.context = f"rule '{name}'"
        self.unknown_keys(item, RULE_KEYS)
        rules = self.col.rules
        source = None
        if "source" in item and not is_null(item["source"][1]):
            source = self.scalar(item["source"][1], "source").strip() or None
        legacy = "append" in item and self.boolean(item["append"][1], "append")
        if "append" in item and legacy:
            self.warn(item["append"][0], "'append' key is deprecated. Add an 'append' entry "
                      "(e.g. 'condition: append') under 'override' instead.")
        if "override" in item:
            if legacy:
                self.error(item["override"][0],
                           "Keys 'override' and 'append: true' cannot be used together.")
            self.rule_override(node, item, name, source)
            return
        if legacy:
            self.rule_legacy_append(node, item, name, source)
            return
        if not any(k in item for k in ("condition", "output", "desc", "priority")) and \
                "enabled" in item:
            self.warn(item["enabled"][0], "The standalone 'enabled' key usage is deprecated. "
                      "The correct approach requires also a 'replace' entry under the "
                      "'override' key (i.e. 'enabled: replace').")
            if name not in rules:
                self.error(node, "Rule has 'enabled' key but no rule by that name already "
                           "exists")
            rules[name].enabled = self.boolean(item["enabled"][1], "enabled")
            return
        self.rule_define(node, item, name, source)

    def check_source(self, node, name, source) -> None:
        old = self.col.rules[name]
        if source is not None and source != old.source:
            self.error(node, "Rule has been re-defined with a different source")

    def rule_define(self, node: Node, item, name: str, source: str | None) -> None:
        cond_text, cnode = self.required_str(item, "condition", node)
        output, onode = self.required_str(item, "output", node)
        desc, _ = self.required_str(item, "desc", node)
        prio_text, pnode = self.required_str(item, "priority", node)
        try:
            priority = Priority.parse(prio_text)
        except ValueError:
            self.error(pnode, f"Invalid priority '{prio_text}'")
        rules = self.col.rules
        if name in rules:
            self.check_source(node, name, source)
        info = RuleInfo(
            name=name, cond=MappedText.of(cond_text, self.where(cnode)),
            output=output.strip(), desc=desc, priority=priority,
            index=rules[name].index if name in rules else len(rules),
            where=self.where(node), output_where=self.where(onode),
            source=source or "syscall")
        if "tags" in item:
            info.tags = self.str_list(item["tags"][1], "tags")
        if "enabled" in item:
            info.enabled = self.boolean(item["enabled"][1], "enabled")
        self.rule_flags(info, item)
        if "exceptions" in item:
            info.exceptions = self.exceptions(item["exceptions"][1], new=True)
            info.exceptions_where = self.where(item["exceptions"][1])
        if info.source not in KNOWN_SOURCES:
            self.warn(node, f"Unknown source {info.source}, skipping")
            info.unknown_source = True
        rules[name] = info

    def rule_flags(self, info: RuleInfo, item) -> None:
        if "warn_evttypes" in item:
            info.warn_evttypes = self.boolean(item["warn_evttypes"][1], "warn_evttypes")
        if "skip-if-unknown-filter" in item:
            info.skip_if_unknown_filter = self.boolean(item["skip-if-unknown-filter"][1],
                                                       "skip-if-unknown-filter")
        if "capture" in item:
            info.capture = self.boolean(item["capture"][1], "capture")
        if "capture_duration" in item:
            info.capture_duration = self.integer(item["capture_duration"][1],
                                                 "capture_duration")

    def rule_legacy_append(self, node, item, name, source) -> None:
        if "condition" not in item and "exceptions" not in item:
            self.error(node, "Appended rule must have exceptions or condition property")
        if name not in self.col.rules:
            self.error(node, "Rule uses 'append' or 'override.<key>: append' but no rule by "
                       "that name already exists")
        self.check_source(node, name, source)
        info = self.col.rules[name]
        if "condition" in item:
            text, cnode = self.required_str(item, "condition", node)
            info.cond = info.cond.add(" ") + MappedText.of(text, self.where(cnode))
        if "exceptions" in item:
            self.append_exceptions(info, item["exceptions"][1])

    def rule_override(self, node, item, name, source) -> None:
        ov = self.overrides(item["override"][1], RULE_APPENDABLE, RULE_REPLACEABLE)
        for key, (mode, knode) in ov.items():
            if key not in item:
                self.error(knode, f"An {mode} override for '{key}' was specified but '{key}' "
                           "is not defined")
        for key, (knode, _vn) in item.items():
            if key in RULE_REPLACEABLE and key not in ov:
                self.error(knode, f"Unexpected key '{key}': no corresponding entry under "
                           "'override' is defined.")
        rules = self.col.rules
        if name not in rules:
            appends = [k for k, (m, _) in ov.items() if m == "append"]
            if appends:
                self.error(node, "Rule uses 'append' or 'override.<key>: append' but no rule "
                           "by that name already exists")
            first = next(iter(ov), "condition")
            self.error(node, f"An 'override.{first}: replace' to a rule was requested but no "
                       "rule by that name already exists")
        self.check_source(node, name, source)
        info = rules[name]
        for key, (mode, _knode) in ov.items():
            vnode = item[key][1]
            if key == "exceptions":
                if mode == "append":
                    self.append_exceptions(info, vnode)
                else:
                    info.exceptions = self.exceptions(vnode, new=True)
                    info.exceptions_where = self.where(vnode)
                continue
            if key == "tags":
                tags = self.str_list(vnode, "tags")
                info.tags = (info.tags + [t for t in tags if t not in info.tags]
                             if mode == "append" else tags)
                continue
            if key in ("condition", "output", "desc"):
                text = self.scalar(vnode, key)
                if mode == "replace" and not text.strip():
                    self.error(vnode, f"Value for key '{key}' must be non-empty")
                if key == "condition":
                    new = MappedText.of(text, self.where(vnode))
                    info.cond = info.cond.add(" ") + new if mode == "append" else new
                elif key == "output":
                    info.output = (info.output + " " + text.strip() if mode == "append"
                                   else text.strip())
                    info.output_where = self.where(vnode)
                else:
                    info.desc = info.desc + " " + text if mode == "append" else text
                continue
            if key == "priority":
                text = self.scalar(vnode, key)
                try:
                    info.priority = Priority.parse(text)
                except ValueError:
                    self.error(vnode, f"Invalid priority '{text}'")
            elif key == "enabled":
                info.enabled = self.boolean(vnode, key)
            else:
                self.rule_flags(info, {key: item[key]})

    # -- exceptions -------------------------------------------------------------------
    def exceptions(self, node: Node, new: bool) -> list[ExceptionInfo]:
        if is_null(node):
            return []
        if not is_seq(node):
            self.error(node, "Rule exceptions must be a sequence")
        out: list[ExceptionInfo] = []
        names: set[str] = set()
        for entry in node.value:
            ex = self.exception(entry, new=new)
            if ex.name in names:
                self.warn(entry, f"Multiple definitions of exception '{ex.name}' in the same "
                          "rule")
            names.add(ex.name)
            out.append(ex)
        return out

    def exception(self, node: Node, new: bool) -> ExceptionInfo:
        if not is_map(node):
            self.error(node, "Rule exception must be a mapping")
        item = {k: (kn, vn) for k, kn, vn in mapping_items(node)}
        name, _ = self.required_str(item, "name", node)
        fields_v: str | list[str] | None = None
        comps_v: str | list[str] | None = None
        if "fields" in item:
            fnode = item["fields"][1]
            if is_seq(fnode):
                fields_v = self.str_list(fnode, "fields")
            elif is_scalar(fnode) and not is_null(fnode):
                fields_v = fnode.value
            else:
                self.error(fnode, "Rule exception fields must be a sequence or a string")
        elif new:
            self.error(node, "Rule exception item must have fields property with a list of "
                       "fields")
        if "comps" in item:
            cnode = item["comps"][1]
            if is_seq(cnode):
                comps_v = [c.strip() for c in self.str_list(cnode, "comps")]
            elif is_scalar(cnode) and not is_null(cnode):
                comps_v = cnode.value.strip()
            else:
                self.error(cnode, "Rule exception comps must be a sequence or a string")
        values: list[Any] = []
        if "values" in item:
            vnode = item["values"][1]
            if not is_null(vnode):
                if not is_seq(vnode):
                    self.error(vnode, "Rule exception values must be a sequence")
                values = [self.exception_value(v) for v in vnode.value]
        if fields_v is not None:
            fields_v, comps_v = self.check_exception_fields(node, fields_v, comps_v)
        return ExceptionInfo(name, fields_v, comps_v, values, self.where(node))

    def exception_value(self, node: Node) -> Any:
        if is_seq(node):
            return [self.exception_value(v) for v in node.value]
        if is_scalar(node):
            return node.value
        self.error(node, "Rule exception values must be strings or lists of strings")

    def check_exception_fields(self, node, fields_v, comps_v):
        if isinstance(fields_v, str):
            if comps_v is None:
                comps_v = "in"
            if not isinstance(comps_v, str):
                self.error(node, "Fields and comps must both be strings")
            comps_v = " ".join(comps_v.split())
            if not valid_comp(comps_v, scalar_field=True):
                self.error(node, "When fields is a single value, comps must be one of (in, "
                           "pmatch, intersects), or a comparison with a modifier "
                           "(e.g. 'startswith oneof')")
            self.check_exception_field(node, fields_v)
            return fields_v, comps_v
        if comps_v is None:
            comps_v = ["="] * len(fields_v)
        if isinstance(comps_v, str):
            self.error(node, "Fields and comps must both be lists")
        if len(fields_v) != len(comps_v):
            self.error(node, "Fields and comps lists must have equal length")
        comps_v = [" ".join(c.split()) for c in comps_v]
        for comp in comps_v:
            if not valid_comp(comp):
                self.error(node, f"'{comp}' is not a supported comparison operator")
        for f in fields_v:
            self.check_exception_field(node, f)
        return fields_v, comps_v

    def check_exception_field(self, node, text: str) -> None:
        # fields may be written with transformers: tolower(proc.name)
        inner = re.sub(r"^(?:\s*(?:tolower|toupper|b64|basename|len)\(\s*)+", "", text.strip())
        inner = inner.rstrip(") \t")
        m = re.fullmatch(r"([a-zA-Z0-9_.]+)(?:\[(.*)\])?", inner)
        name = m.group(1) if m else inner
        if field_registry.lookup(name) is None:
            self.error(node, f"'{text}' is not a supported filter field")

    def append_exceptions(self, info: RuleInfo, node: Node) -> None:
        if is_null(node):
            return
        if not is_seq(node):
            self.error(node, "Rule exceptions must be a sequence")
        for entry in node.value:
            if not is_map(entry):
                self.error(entry, "Rule exception must be a mapping")
            keys = {k for k, _, _ in mapping_items(entry)}
            name_node = dict((k, v) for k, _, v in mapping_items(entry)).get("name")
            name = name_node.value if isinstance(name_node, ScalarNode) else None
            existing = next((e for e in info.exceptions if e.name == name), None)
            if "values" not in keys:
                self.warn(entry, "Overriding/appending exception with no values")
            if existing is not None:
                for key in ("fields", "comps"):
                    if key in keys:
                        what = "fields" if key == "fields" else "comps"
                        self.error(entry, f"Can not append exception {what} to existing "
                                   "exception, only values")
                ex = self.exception(entry, new=False)
                existing.values.extend(ex.values)
            else:
                ex = self.exception(entry, new=True)
                info.exceptions.append(ex)
            if info.exceptions_where is None:
                info.exceptions_where = self.where(node)


def read_file(col: Collector, source: SourceFile) -> None:
    """Read one file's items into the collector (stops at the file's first error)."""
    _FileReader(col, source).read()
