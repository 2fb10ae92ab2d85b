"""`enforcer policies validate|list FILE|DIR...`: check response policy files
(FILE:LINE:COL: message per problem, exit 1) or list what they do."""

from __future__ import annotations

import argparse
import sys

from enforcer.resources import default_responses_dir


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("policies", help="validate or list response policies")
    inner = parser.add_subparsers(dest="policies_command", metavar="SUBCOMMAND")
    check = inner.add_parser("validate", help="check policy files; FILE:LINE:COL per problem")
    check.add_argument("paths", nargs="*", metavar="FILE|DIR",
                       help="policy files or directories (default: the bundled policies)")
    check.set_defaults(func=validate)
    show = inner.add_parser("list", help="name, match, actions and dry-run of each policy")
    show.add_argument("paths", nargs="*", metavar="FILE|DIR")
    show.set_defaults(func=list_policies)
    parser.set_defaults(func=lambda args: (parser.print_help(sys.stderr), 2)[1])


def validate(args: argparse.Namespace) -> int:
    from enforcer.policy.validate import validate_policies
    summary, diagnostics = validate_policies(args.paths or [default_responses_dir()])
    errors = [d for d in diagnostics if d.severity == "error"]
    for diagnostic in diagnostics:
        prefix = "" if diagnostic.severity == "error" else "warning: "
        print(f"{diagnostic.file}:{diagnostic.line}:{diagnostic.column}: {prefix}"
              f"{diagnostic.message}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} error(s) in policies", file=sys.stderr)
        return 1
    print(summary)
    return 0


def list_policies(args: argparse.Namespace) -> int:
    from enforcer.errors import PolicyError
    from enforcer.policy.loader import load_policies
    try:
        policy_set = load_policies(args.paths or [default_responses_dir()])
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    for policy in policy_set.policies:
        actions = ", ".join(step.name for step in policy.actions)
        mode = "dry-run" if policy.dry_run else "ACTS"
        print(f"{policy.name}\t{mode}\t{actions}\t{policy.file}:{policy.line}")
    return 0
