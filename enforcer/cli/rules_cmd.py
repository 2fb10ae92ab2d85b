"""`enforcer rules list`: the loaded rules with priority, state, tags and event types;
`enforcer rules describe [NAME]`: name and description, as Falco's `-L` and `-l NAME`."""

from __future__ import annotations

import argparse
import json
import sys

from enforcer.cli.rules_args import add_rules_option, load_or_report, rules_paths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rules", help="inspect loaded rules")
    rsub = p.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    lp = rsub.add_parser("list", help="name, priority, enabled, tags, event types")
    add_rules_option(lp)
    lp.add_argument("--format", choices=("text", "json"), default="text")
    lp.set_defaults(func=run_list)
    dp = rsub.add_parser("describe", help="name and description of every rule, or of NAME "
                                          "(Falco's -L and -l NAME)")
    dp.add_argument("name", nargs="?", metavar="NAME")
    add_rules_option(dp)
    dp.add_argument("--format", choices=("text", "json"), default="text",
                    help="json: every detail (condition, output, priority, tags), as Falco's "
                         "-L/-l with json_output")
    dp.set_defaults(func=run_describe)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_list(args: argparse.Namespace) -> int:
    loaded = load_or_report("rules list", rules_paths(args))
    if isinstance(loaded, int):
        return loaded
    rows = []
    for r in loaded.rules.values():
        rows.append({
            "name": r.name, "priority": r.priority.display, "enabled": r.enabled,
            "tags": list(r.tags),
            "event_types": None if r.event_types is None else sorted(r.event_types),
            "source": r.source,
        })
    if args.format == "json":
        print(json.dumps(rows, indent=1))
        return 0
    for row in rows:
        types = "any" if row["event_types"] is None else ",".join(row["event_types"])
        state = "enabled" if row["enabled"] else "disabled"
        print(f"{row['name']}\t{row['priority']}\t{state}\t{','.join(row['tags'])}\t{types}")
    return 0


def run_describe(args: argparse.Namespace) -> int:
    """Print the name and description of each rule (or of the rule `args.name`)."""
    loaded = load_or_report("rules describe", rules_paths(args))
    if isinstance(loaded, int):
        return loaded
    rules = list(loaded.rules.values())
    if args.name is not None:
        rules = [r for r in rules if r.name == args.name]
        if not rules:
            print(f"enforcer rules describe: no rule named {args.name!r} in the loaded rules; "
                  "`enforcer -L` lists them", file=sys.stderr)
            return 1
    if args.format == "json":
        print(json.dumps({"rules": [{
            "name": r.name, "description": r.desc, "condition": r.condition,
            "output": r.output, "priority": r.priority.display, "enabled": r.enabled,
            "tags": list(r.tags), "source": r.source, "file": r.file, "line": r.line,
        } for r in rules]}, indent=1))
        return 0
    for r in rules:
        print(f"{r.name}\n    {' '.join(r.desc.split())}")
    return 0
