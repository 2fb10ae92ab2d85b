"""`enforcer validate FILE|DIR...`: load rules and report every problem at FILE:LINE:COL."""

from __future__ import annotations

import argparse
import json
import sys

from enforcer.cli.rules_args import missing_paths, print_diagnostics
from enforcer.errors import RuleError
from enforcer.rules.loader import load_rules


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate", help="check rule files; print counts or FILE:LINE:COL problems",
        description="Load Falco rule files (and directories of *.yaml), in order, as the "
                    "agent would. Prints 'N rules, M macros, L lists' and exits 0, or one "
                    "'FILE:LINE:COL: message' per problem and exits 1. Warnings go to "
                    "stderr.")
    p.add_argument("paths", nargs="+", metavar="FILE|DIR")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    missing = missing_paths(args.paths)
    if missing:
        for path in missing:
            print(f"enforcer validate: no such file or directory: {path}", file=sys.stderr)
        return 2
    try:
        ruleset = load_rules(args.paths)
    except RuleError as exc:
        errors = [d for d in exc.diagnostics if d.severity != "warning"]
        if args.format == "json":
            print(json.dumps({"rules": 0, "macros": 0, "lists": 0, "enabled": 0,
                              "errors": [d.as_dict() for d in errors], "warnings": []}))
        else:
            print_diagnostics(errors, sys.stdout)
        return 1
    counts = ruleset.counts()
    if args.format == "json":
        print(json.dumps({**counts, "errors": [],
                          "warnings": [d.as_dict() for d in ruleset.warnings]}))
    else:
        print_diagnostics(ruleset.warnings, sys.stderr)
        print(f"{counts['rules']} rules, {counts['macros']} macros, {counts['lists']} lists")
    return 0
