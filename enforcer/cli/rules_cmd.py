"""`enforcer rules list`: the loaded rules with priority, state, tags and event types."""

from __future__ import annotations

import argparse
import json

from enforcer.cli.rules_args import add_rules_option, load_or_report, rules_paths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rules", help="inspect loaded rules")
    rsub = p.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    lp = rsub.add_parser("list", help="name, priority, enabled, tags, event types")
    add_rules_option(lp)
    lp.add_argument("--format", choices=("text", "json"), default="text")
    lp.set_defaults(func=run_list)
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
