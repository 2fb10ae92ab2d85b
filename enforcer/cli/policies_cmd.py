"""`enforcer policies validate|list FILE|DIR...`: check response policy files
(FILE:LINE:COL: message per problem, exit 1) or list what they do;
`enforcer policies import-talon FILE...`: Falco Talon rule files as our policies
(enforcer.policy.talon_import), refusals at FILE:LINE:COL. `enforcer policies
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
    talon = inner.add_parser(
        "import-talon", help="convert Falco Talon rule files into response policies",
        description="Read Falco Talon rule files (later files override earlier ones, as "
                    "Talon's -r does) and print the equivalent response policies (YAML, "
                    "all dry_run: true) for review. What cannot be carried over is said at "
                    "FILE:LINE:COL on stderr; exit 1 when anything was refused.")
    talon.add_argument("paths", nargs="+", metavar="FILE")
    talon.add_argument("--talon-config", metavar="FILE", default=None,
                       help="Talon's config.yaml: its notifiers (webhook URL and headers) "
                            "and default_notifiers")
    talon.add_argument("--write", "-w", metavar="FILE", default=None,
                       help="write the policies here instead of stdout")
    talon.set_defaults(func=import_talon_cmd)
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


def import_talon_cmd(args: argparse.Namespace) -> int:
    """Convert Talon rule files; the result is loaded by our own loader before it is
    written, so what is printed always loads."""
    import tempfile
    from pathlib import Path

    from enforcer.errors import PolicyError
    from enforcer.policy.loader import load_policies
    from enforcer.policy.talon_import import import_talon

    missing = [p for p in args.paths if not Path(p).is_file()]
    if missing:
        print(f"enforcer policies import-talon: no such file: {missing[0]}", file=sys.stderr)
        return 2
    result = import_talon(args.paths, args.talon_config)
    for d in result.diagnostics:
        kind = "warning: " if d.severity == "warning" else ""
        print(f"{d.file}:{d.line}:{d.column}: {kind}{d.message}", file=sys.stderr)
    text = result.to_yaml()
    if result.policies:
        with tempfile.TemporaryDirectory() as tmp:
            check = Path(tmp) / "imported.yaml"
            check.write_text(text, encoding="utf-8")
            try:
                load_policies([check])
            except PolicyError as exc:
                print(f"enforcer policies import-talon: the converted policies do not load "
                      f"(a bug; please report it): {exc}", file=sys.stderr)
                return 1
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    print(f"{len(result.policies)} policies imported; {len(result.refused)} refusals (above)",
          file=sys.stderr)
    return 1 if result.refused else 0
