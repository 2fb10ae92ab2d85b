"""Load Falco rule files: `load_rules(paths) -> RuleSet`.

Reading (enforcer.rules.reader) collects lists, macros and rules across files in the order
given, with Falco's append/override semantics. Compiling then follows Falco's loader:
1. lists: items naming an earlier list are spliced in;
2. every condition is rewritten textually, each list name standing as a whole token being
   replaced by its items (Falco does exactly this, so a list can be used anywhere);
3. macros are parsed; a macro may only use macros defined before it (or before its
   latest append); rules may use every macro;
4. rules: exceptions are appended as `and not (...)`, the condition parsed, macros
   expanded, fields and operators checked, the output compiled.
Every problem is reported as a Diagnostic with FILE:LINE:COL; errors are raised together
as one RuleError, warnings end up on `ruleset.warnings`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from enforcer.errors import Diagnostic, RuleError
from enforcer.rules import checks, evttypes, lint, nodes, reader
from enforcer.rules.mapped import MappedText
from enforcer.rules.output import OutputError, compile_output, strip_container_info
from enforcer.rules.parser import ConditionSyntaxError, parse
from enforcer.rules.ruleset import Macro, Rule, RuleException, RuleList, RuleSet
from enforcer.rules.yamlsource import SourceFile

_BLANKS = " \t\n\r"
_DELIMS = _BLANKS + "(),="
_LIST_OPS = ("in", "intersects", "pmatch")
# A list name right after one of these words is an operand, not a list item: its
# substitution gets parentheses (`f startswith oneof my_list`, `f in my_list`).
_BARE_LIST_CONTEXT = re.compile(r"(?:^|[\s)])(?:oneof|anyof|allof|in|intersects|pmatch)\s*$")
# Falco warns when a syscall rule can match more event types than this.
_MAX_EVTTYPES_QUIET = 100


def rule_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand directories into their *.yaml/*.yml files, sorted by name."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out.extend(sorted(q for q in path.iterdir()
                              if q.suffix in (".yaml", ".yml") and q.is_file()))
        else:
            out.append(path)
    return out


def load_rules(paths: Sequence[str | Path]) -> RuleSet:
    """Load rule files and directories in order. Raises RuleError listing every problem."""
    col = reader.Collector()
    files = rule_files(paths)
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            col.errors.append(Diagnostic(str(path), 0, 0, "No such file or directory"))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            col.errors.append(Diagnostic(str(path), 0, 0, f"cannot read rules file: {exc}"))
            continue
        reader.read_file(col, SourceFile(str(path), text))
    return load_collected(col, [str(f) for f in files])


def load_text(text: str, name: str = "<rules>") -> RuleSet:
    """Load rules from a string (tests, tools). Same semantics as load_rules."""
    col = reader.Collector()
    reader.read_file(col, SourceFile(name, text))
    return load_collected(col, [name])


def load_collected(col: reader.Collector, files: list[str]) -> RuleSet:
    compiler = _Compiler(col)
    # Macro expansion recurses once per nesting level; conditions may nest 1000 deep.
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 20_000))
    try:
        ruleset = compiler.run()
    finally:
        sys.setrecursionlimit(old_limit)
    ruleset.files = files
    order = {name: i for i, name in enumerate(files)}
    errors = _in_file_order(col.errors + compiler.errors, order)
    warnings = _in_file_order(col.warnings + compiler.warnings, order)
    if errors:
        err = RuleError(errors)
        err.warnings = warnings  # what was found before the load failed
        raise err from None
    ruleset.warnings = warnings
    return ruleset


def _in_file_order(diags: list[Diagnostic], order: dict[str, int]) -> list[Diagnostic]:
    """Without duplicates, sorted by file (in load order), line and column."""
    unique = {(d.file, d.line, d.column, d.message): d for d in diags}
    return sorted(unique.values(), key=lambda d: (order.get(d.file, len(order)), d.line,
                                                  d.column))


def quote_item(item: str) -> str:
    """Falco quotes an item with a space (unless it already starts with a quote)."""
    if " " in item and item[:1] not in ("'", '"'):
        return '"' + item + '"'
    return item


def substitute_list(text: MappedText, name: str, items: list[str]) -> tuple[MappedText, bool]:
    """Replace each whole-token occurrence of list `name` by its items (Falco's rewrite)."""
    used = False
    s = text.text
    start = s.find(name)
    while start != -1:
        end = start + len(name)
        if (start == 0 or s[start - 1] in _DELIMS) and (end >= len(s) or s[end] in _DELIMS):
            at = start
            while start > 0 and s[start - 1] in _BLANKS:
                start -= 1
            while end < len(s) and s[end] in _BLANKS:
                end += 1
            sub = ", ".join(quote_item(i) for i in items)
            if not sub:
                if start > 0 and s[start - 1] == ",":
                    start -= 1
                elif end < len(s) and s[end] == ",":
                    end += 1
            if _BARE_LIST_CONTEXT.search(s[:start]):
                sub = "(" + sub + ")"
            new = (" " if start > 0 else "") + sub + " "
            text = text.replace(start, end, new, at=at)
            s = text.text
            start = start + len(new)
            used = True
            start = s.find(name, start)
            continue
        start = s.find(name, start + 1)
    return text, used


class _Compiler:
    def __init__(self, col: reader.Collector):
        self.col = col
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self.lists: dict[str, list[str]] = {}
        self.list_used: set[str] = set()
        self.macro_ast: dict[str, nodes.Expr] = {}
        self.macro_ok: dict[str, bool] = {}
        self.macro_used: set[str] = set()
        self.expanded: dict[str, nodes.Expr] = {}
        self.macro_check_errors: dict[str, Diagnostic | None] = {}
        self.macros_linted: set[str] = set()

    # -- diagnostics ------------------------------------------------------------------
    def diag(self, text: MappedText, offset: int, message: str, fallback, severity="error",
             context: str = "") -> Diagnostic:
        loc = text.locate(offset)
        if loc is None:
            line, col = fallback.start()
            loc = (fallback.file, line, col)
        msg = f"{context}: {message}" if context else message
        return Diagnostic(loc[0], loc[1], loc[2], msg, severity)

    def warn_at(self, where, message: str, context: str) -> None:
        line, col = where.start()
        self.warnings.append(Diagnostic(where.file, line, col, f"{context}: {message}",
                                        "warning"))

    # -- steps ------------------------------------------------------------------------
    def run(self) -> RuleSet:
        self.compile_lists()
        self.compile_macros()
        rules = self.compile_rules()
        rs = RuleSet()
        rs.rules = rules
        for name, info in self.col.macros.items():
            if name not in self.expanded and self.macro_ok.get(name):
                try:
                    self.expand_macro(name, ())
                except (_MacroBroken, _MacroLoop, RecursionError):
                    pass  # reported when a rule uses it; unused, it stays unexpanded
            rs.macros[name] = Macro(name, info.cond.text, self.expanded.get(name),
                                    name in self.macro_used)
        for name, items in self.lists.items():
            rs.lists[name] = RuleList(name, tuple(items), name in self.list_used)
        for name, info in self.col.lists.items():
            if name not in self.list_used:
                self.warn_at(info.where, "List not referred to by any other rule/macro",
                             f"list '{name}'")
        for name, info in self.col.macros.items():
            if name not in self.macro_used:
                self.warn_at(info.where, "Macro not referred to by any other rule/macro",
                             f"macro '{name}'")
        for name, info in self.col.rules.items():
            if info.unknown_source:
                rs.skipped[name] = f"unknown source {info.source}"
        rs.required_engine_version = ".".join(map(str, self.col.required_engine_version))
        return rs

    def compile_lists(self) -> None:
        infos = self.col.lists
        for name, info in infos.items():
            items: list[str] = []
            for item in info.items:
                ref = infos.get(item)
                if ref is not None and ref.index < info.visibility and ref is not info:
                    self.list_used.add(ref.name)
                    items.extend(ref.items)
                else:
                    items.append(item)
            self.lists[name] = items

    def rewrite_lists(self, text: MappedText) -> MappedText:
        for name, items in self.lists.items():
            if name not in text.text:
                continue
            text, used = substitute_list(text, name, items)
            if used:
                self.list_used.add(name)
        return text

    def parse(self, text: MappedText, where, context: str) -> tuple[nodes.Expr | None,
                                                                    MappedText]:
        text = self.rewrite_lists(text)
        try:
            return parse(text.text), text
        except ConditionSyntaxError as exc:
            self.errors.append(self.diag(text, exc.pos, str(exc), where, context=context))
            return None, text

    def compile_macros(self) -> None:
        infos = self.col.macros
        self.macro_text: dict[str, MappedText] = {}
        for name, info in infos.items():
            expr, text = self.parse(info.cond, info.where, f"macro '{name}'")
            self.macro_text[name] = text
            if expr is not None:
                self.macro_ast[name] = expr
        # visibility: a macro sees macros defined before it (or before its latest append)
        for name, info in infos.items():
            expr = self.macro_ast.get(name)
            if expr is None:
                self.macro_ok[name] = False
                continue
            ok = True
            for node in nodes.walk(expr):
                if isinstance(node, nodes.Identifier):
                    ref = infos.get(node.name)
                    if ref is None or ref.index >= info.visibility:
                        self.errors.append(self.diag(
                            self.macro_text[name], node.pos,
                            f"Undefined macro '{node.name}' used in filter.", info.where,
                            context=f"macro '{name}'"))
                        ok = False
                        break
                    self.macro_used.add(node.name)
            self.macro_ok[name] = ok

    def expand(self, expr: nodes.Expr, stack: tuple[str, ...] = ()) -> nodes.Expr:
        """Replace identifiers by Macro nodes holding expanded bodies (memoised)."""
        if isinstance(expr, nodes.Identifier):
            return self.expand_macro(expr.name, stack)
        if isinstance(expr, nodes.Check):
            return expr
        if isinstance(expr, nodes.Not):
            return nodes.Not(self.expand(expr.child, stack))
        if isinstance(expr, nodes.And):
            return nodes.And(tuple(self.expand(c, stack) for c in expr.children))
        if isinstance(expr, nodes.Or):
            return nodes.Or(tuple(self.expand(c, stack) for c in expr.children))
        if isinstance(expr, nodes.Macro):
            return expr
        raise TypeError(expr)

    def expand_macro(self, name: str, stack: tuple[str, ...]) -> nodes.Expr:
        if name in self.expanded:
            return self.expanded[name]
        if name in stack:
            raise _MacroLoop(name)
        if name not in self.macro_ast or not self.macro_ok.get(name, False):
            raise _MacroBroken(name)  # its own error has been reported
        body = self.expand(self.macro_ast[name], stack + (name,))
        node = nodes.Macro(name, body)
        self.expanded[name] = node
        return node

    def macros_in(self, expr: nodes.Expr) -> set[str]:
        return {n.name for n in nodes.walk(expr) if isinstance(n, nodes.Macro)}

    def check_expr(self, expr: nodes.Expr, text: MappedText, where, context: str,
                   skip_macros: bool = True) -> tuple[Diagnostic | None, bool]:
        """First field/operator error in the expression's own checks (not in macros)."""
        stack: list[nodes.Expr] = [expr]
        while stack:
            node = stack.pop()
            if isinstance(node, nodes.Check):
                try:
                    checks.validate(node)
                except checks.CheckError as exc:
                    return self.diag(text, exc.pos, str(exc), where, context=context), \
                        exc.unknown_field
                except (ValueError, TypeError) as exc:
                    return self.diag(text, node.pos, str(exc), where, context=context), False
            elif isinstance(node, nodes.And | nodes.Or):
                stack.extend(reversed(node.children))
            elif isinstance(node, nodes.Not):
                stack.append(node.child)
            elif isinstance(node, nodes.Macro) and not skip_macros:
                stack.append(node.expr)
        return None, False

    def lint(self, expr: nodes.Expr, text: MappedText, where, context: str) -> None:
        for offset, message in lint.check_warnings(expr):
            self.warnings.append(self.diag(text, offset, message, where, "warning",
                                           context=context))

    def macro_error(self, name: str) -> tuple[Diagnostic | None, bool]:
        if name not in self.macro_check_errors:
            info = self.col.macros[name]
            self.macro_check_errors[name] = self.check_expr(
                self.macro_ast[name], self.macro_text[name], info.where, f"macro '{name}'")
        return self.macro_check_errors[name]

    def compile_rules(self) -> dict[str, Rule]:
        out: dict[str, Rule] = {}
        for name, info in self.col.rules.items():
            if info.unknown_source:
                continue
            rule = self.compile_rule(info)
            if rule is not None:
                out[name] = rule
        return out

    def exception_text(self, info: reader.RuleInfo) -> MappedText:
        text = info.cond.prefix("(").add(")")
        for ex in info.exceptions:
            icond = self.exception_condition(ex)
            if icond is None:
                return text
            if icond:
                text = text + MappedText.synthetic(" and not " + icond, ex.where)
        return text

    def exception_condition(self, ex: reader.ExceptionInfo) -> str | None:
        context = "exception '" + ex.name + "'"
        if isinstance(ex.fields, str):
            parts = []
            for val in ex.values:
                if isinstance(val, list):
                    self._ex_error(ex, "Expected values array to contain a list of strings",
                                   context)
                    return None
                parts.append(quote_item(val))
            if not parts:
                return ""
            return f"({ex.fields} {ex.comps} (" + ", ".join(parts) + "))"
        fields_l = list(ex.fields or [])
        comps = list(ex.comps or [])
        tuples = []
        for values in ex.values:
            if not isinstance(values, list) or len(values) != len(fields_l):
                self._ex_error(ex, "Fields and values lists must have equal length", context)
                return None
            terms = []
            for f, comp, v in zip(fields_l, comps, values, strict=True):
                if isinstance(v, list):
                    istr = "(" + ", ".join(quote_item(x) for x in v
                                           if not isinstance(x, list)) + ")"
                elif comp in _LIST_OPS or len(comp.split()) == 2:
                    istr = v if v[:1] == "(" else "(" + v + ")"
                else:
                    istr = quote_item(v)
                terms.append(f"{f} {comp} {istr}")
            tuples.append("(" + " and ".join(terms) + ")")
        if not tuples:
            return ""
        return "(" + " or ".join(tuples) + ")"

    def _ex_error(self, ex, message, context) -> None:
        line, col = ex.where.start()
        self.errors.append(Diagnostic(ex.where.file, line, col, f"{context}: {message}"))

    def compile_rule(self, info: reader.RuleInfo) -> Rule | None:
        context = f"rule '{info.name}'"
        text = self.exception_text(info) if info.exceptions else info.cond
        n_errors = len(self.errors)
        expr, text = self.parse(text, info.where, context)
        if expr is None:
            return None
        # undefined macros (rules see every macro)
        for node in nodes.walk(expr):
            if isinstance(node, nodes.Identifier):
                if node.name not in self.macro_ast:
                    if node.name in self.col.macros:
                        return None  # that macro failed to parse; already reported
                    self.errors.append(self.diag(
                        text, node.pos, f"Undefined macro '{node.name}' used in filter.",
                        info.where, context=context))
                    return None
                if not self.macro_ok.get(node.name, False):
                    return None
        try:
            expanded = self.expand(expr)
        except _MacroBroken:
            return None
        except _MacroLoop as loop:
            self.errors.append(self.diag(text, 0, f"Macro '{loop.name}' uses itself",
                                         info.where, context=context))
            return None
        except RecursionError:
            self.errors.append(self.diag(text, 0, "Macros nest too deeply", info.where,
                                         context=context))
            return None
        used = self.macros_in(expanded)
        self.macro_used |= used
        problem, unknown = self.check_expr(expanded, text, info.where, context)
        if problem is None:
            for m in sorted(used, key=lambda n: self.col.macros[n].index):
                problem, unknown = self.macro_error(m)
                if problem is not None:
                    break
        if problem is not None:
            if unknown and info.skip_if_unknown_filter:
                self.warnings.append(Diagnostic(problem.file, problem.line, problem.column,
                                                problem.message, "warning"))
                return None
            self.errors.append(problem)
            return None
        fmt = self.compile_rule_output(info, context)
        if fmt is None:
            return None
        self.lint(expr, text, info.where, context)
        for m in used:
            if m not in self.macros_linted:
                self.macros_linted.add(m)
                self.lint(self.macro_ast[m], self.macro_text[m], self.col.macros[m].where,
                          f"macro '{m}'")
        ets = evttypes.event_types(expanded)
        if (info.warn_evttypes and info.source == "syscall"
                and (ets is None or len(ets) > _MAX_EVTTYPES_QUIET)):
            self.warn_at(info.where, "Rule matches too many evt.type values. This has a "
                         "significant performance penalty.", context)
        if len(self.errors) != n_errors:
            return None
        line, _ = info.where.start()
        return Rule(
            name=info.name, desc=info.desc, condition=info.cond.text, output=fmt.text,
            priority=info.priority, enabled=info.enabled, tags=tuple(info.tags),
            source=info.source,
            exceptions=tuple(RuleException(
                e.name,
                e.fields if isinstance(e.fields, str) else tuple(e.fields or ()),
                e.comps if isinstance(e.comps, str) or e.comps is None
                else tuple(e.comps),
                tuple(tuple(v) if isinstance(v, list) else v for v in e.values))
                for e in info.exceptions),
            event_types=ets, expr=expanded, output_format=fmt, file=info.where.file,
            line=line, capture=info.capture, capture_duration=info.capture_duration,
            warn_evttypes=info.warn_evttypes,
            skip_if_unknown_filter=info.skip_if_unknown_filter)

    def compile_rule_output(self, info: reader.RuleInfo, context: str):
        text, had_info = strip_container_info(info.output)
        if had_info:
            self.warn_at(info.output_where, "%container.info is deprecated and has been "
                         "removed from the output", context)
        if "evt.dir" in text:
            self.warn_at(info.output_where, "usage of deprecated field 'evt.dir' has been "
                         "detected in the rule output", context)
        try:
            return compile_output(text)
        except OutputError as exc:
            mt = MappedText.of(info.output, info.output_where)
            d = self.diag(mt, exc.pos, str(exc), info.output_where, context=context)
            if exc.unknown_field and info.skip_if_unknown_filter:
                self.warnings.append(Diagnostic(d.file, d.line, d.column, d.message,
                                                "warning"))
            else:
                self.errors.append(d)
            return None


class _MacroBroken(Exception):
    """A macro that failed to compile (already reported) is used."""


class _MacroLoop(Exception):
    def __init__(self, name: str):
        self.name = name
