"""`enforcer validate FILE|DIR...`: load rules (and response policies, when given) and
report every problem at FILE:LINE:COL.

With rule files only, it behaves as it always did. When a path is a policy repository (a
directory with `rules/` or `policies/`, see docs/gitops) or a file is a policy file (a YAML
list of `- policy:` items), rules and policies are checked together: references between
them, actions the deployment disables, in_kernel eligibility (enforcer.gitops)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from enforcer.cli.rules_args import missing_paths, print_diagnostics
from enforcer.errors import RuleError
from enforcer.rules.loader import load_rules


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate", help="check rules and policies; print counts or FILE:LINE:COL problems",
        description="Load Falco rule files (and directories of *.yaml), in order, as the "
                    "agent would. Prints 'N rules, M macros, L lists' and exits 0, or one "
                    "'FILE:LINE:COL: message' per problem and exits 1. Warnings go to "
                    "stderr. A directory holding rules/ or policies/ is a policy "
                    "repository, and a YAML list of '- policy:' items is a policy file: "
                    "rules and policies are then checked together (the bundled rules load "
                    "first for a repository, or when no rule file is given).")
    p.add_argument("paths", nargs="+", metavar="FILE|DIR")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--show-source", action="store_true",
                   help="after each problem in rule files, print its source line and a caret")
    deploy = p.add_argument_group("the deployment (for policies)")
    deploy.add_argument("--enabled-actions", metavar="A,B,...", default=None,
                        help="actions the deployment allows; any other is an error "
                             "(default: $ENFORCER_ENABLED_ACTIONS as the chart sets it, "
                             "else all)")
    deploy.add_argument("--disabled-actions", metavar="A,B,...", default=None,
                        help="actions the deployment forbids")
    deploy.add_argument("--values", action="append", default=[], metavar="VALUES.yaml",
                        help="Helm values of charts/enforcer: actions.*.enabled false "
                             "disables an action (repeatable)")
    deploy.add_argument("--no-bundled-rules", action="store_true",
                        default=os.environ.get("ENFORCER_BUNDLED_RULES", "").lower()
                        in ("0", "false", "no"),
                        help="do not load the bundled rules before a repository's rules/ "
                             "(the chart's rules.bundled: false)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    missing = missing_paths(args.paths)
    if missing:
        for path in missing:
            print(f"enforcer validate: no such file or directory: {path}", file=sys.stderr)
        return 2
    from enforcer.gitops.layout import classify
    layout = classify(args.paths)
    if layout.has_policies:
        from enforcer.cli.repo_check import run_repo_check
        return run_repo_check(args, layout)
    try:
        ruleset = load_rules(args.paths)
    except RuleError as exc:
        errors = [d for d in exc.diagnostics if d.severity != "warning"]
        warnings = getattr(exc, "warnings", [])
        if args.format == "json":
            print(json.dumps({"rules": 0, "macros": 0, "lists": 0, "enabled": 0,
                              "errors": [d.as_dict() for d in errors],
                              "warnings": [d.as_dict() for d in warnings]}))
        else:
            print_diagnostics(warnings, sys.stderr, context=args.show_source)
            print_diagnostics(errors, sys.stdout, context=args.show_source)
        return 1
    counts = ruleset.counts()
    if args.format == "json":
        print(json.dumps({**counts, "errors": [],
                          "warnings": [d.as_dict() for d in ruleset.warnings]}))
    else:
        print_diagnostics(ruleset.warnings, sys.stderr, context=args.show_source)
        print(f"{counts['rules']} rules, {counts['macros']} macros, {counts['lists']} lists")
    return 0
