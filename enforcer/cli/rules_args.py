"""The `--rules FILE|DIR...` option shared by the commands that load rules."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from enforcer.cli.cumulative import Cumulative
from enforcer.errors import Diagnostic, RuleError
from enforcer.resources import default_rules_dir
from enforcer.rules.loader import load_rules
from enforcer.rules.ruleset import RuleSet


def add_rules_option(parser: argparse.ArgumentParser) -> None:
    """`-r/--rules FILE|DIR...`, repeatable and cumulative (`-r A -r B` = `-r A B`)."""
    parser.add_argument(
        "--rules", "-r", nargs="+", action=Cumulative, metavar="FILE|DIR", default=None,
        help="rule files or directories, loaded in order; repeatable, as Falco's -r "
             "(default: the config file's rules_files, else $ENFORCER_RULES, else the "
             "bundled rules)")


def rules_paths(args: argparse.Namespace) -> list[str]:
    if args.rules:
        return list(args.rules)
    env = os.environ.get("ENFORCER_RULES")
    if env:
        return [p for p in env.split(os.pathsep) if p]
    return [str(default_rules_dir())]


def missing_paths(paths: list[str]) -> list[str]:
    return [p for p in paths if not Path(p).exists()]


def _source_line(cache: dict[str, list[str]], file: str, line: int) -> str | None:
    if file not in cache:
        try:
            cache[file] = Path(file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            cache[file] = []
    lines = cache[file]
    return lines[line - 1] if 0 < line <= len(lines) else None


def print_diagnostics(diags: list[Diagnostic], stream=None, context: bool = False) -> None:
    """`FILE:LINE:COL: message` per diagnostic (`warning: ` for warnings); with `context`,
    each is followed by its source line and a caret under the column (when readable)."""
    stream = stream or sys.stdout
    cache: dict[str, list[str]] = {}
    for d in diags:
        kind = "warning: " if d.severity == "warning" else ""
        print(f"{d.file}:{d.line}:{d.column}: {kind}{d.message}", file=stream)
        text = _source_line(cache, d.file, d.line) if context else None
        if text is not None and d.column >= 1:
            pad = "".join(c if c == "\t" else " " for c in text[:d.column - 1])
            print(f"    {text}\n    {pad}^", file=stream)


def load_or_report(prog: str, paths: list[str]) -> RuleSet | int:
    """Load rules; on failure print every problem and return the exit code."""
    missing = missing_paths(paths)
    if missing:
        for p in missing:
            print(f"enforcer {prog}: no such file or directory: {p}", file=sys.stderr)
        return 2
    try:
        ruleset = load_rules(paths)
    except RuleError as exc:
        print_diagnostics(exc.diagnostics, sys.stderr)
        return 1
    print_diagnostics(ruleset.warnings, sys.stderr)
    return ruleset
