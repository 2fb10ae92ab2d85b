"""`enforcer policies validate|list FILE|DIR...`: check response policy files
(FILE:LINE:COL: message per problem, exit 1) or list what they do. `enforcer policies
status|resume NAME`: ask the running agent (its control socket) for each policy's
blast-radius breaker, or lift a policy's suspension now."""

from __future__ import annotations

import argparse
import json
import os
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
    for name, help_text in (("status", "the running agent's blast-radius breaker per policy"),
                            ("resume", "lift a suspended policy's suspension now")):
        cmd = inner.add_parser(name, help=help_text)
        if name == "resume":
            cmd.add_argument("policy", metavar="NAME")
        cmd.add_argument("--control-socket", metavar="PATH",
                         default=os.environ.get("ENFORCER_CONTROL_SOCKET") or os.path.join(
                             os.environ.get("ENFORCER_STATE_DIR", "/run/enforcer"),
                             "control.sock"),
                         help="the agent's control socket (env ENFORCER_CONTROL_SOCKET; "
                              "default STATE_DIR/control.sock)")
        cmd.set_defaults(func=control)
    parser.set_defaults(func=lambda args: (parser.print_help(sys.stderr), 2)[1])


def control(args: argparse.Namespace) -> int:
    """status / resume against the running agent."""
    from enforcer.respond.control import request

    payload = {"command": args.policies_command}
    if args.policies_command == "resume":
        payload["policy"] = args.policy
    try:
        answer = request(args.control_socket, payload)
    except OSError as exc:
        print(f"enforcer: cannot reach the agent at {args.control_socket}: {exc}; is it "
              "running, and is this its --control-socket (run as root)?", file=sys.stderr)
        return 2
    if not answer.get("ok"):
        print(f"enforcer: {answer.get('error')}", file=sys.stderr)
        return 1
    if args.policies_command == "resume":
        print(f"policy {args.policy} resumed (was {answer.get('was')})")
        return 0
    for state in answer.get("policies", []):
        print(json.dumps(state, sort_keys=True))
    return 0


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
