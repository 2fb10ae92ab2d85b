"""`enforcer actions list|show NAME`: what each response does, its parameters (as JSON
Schema), the fields it needs, its RBAC and an example — all from the action's own code."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("actions", help="list response actions or show one")
    inner = parser.add_subparsers(dest="actions_command", metavar="SUBCOMMAND")
    inner.add_parser("list", help="every action, one line each").set_defaults(func=list_all)
    show = inner.add_parser("show", help="one action in full")
    show.add_argument("name")
    show.set_defaults(func=show_one)
    inner.add_parser("rbac", help="the ClusterRole rules all actions need, as YAML"
                     ).set_defaults(func=rbac)
    parser.set_defaults(func=list_all)


def list_all(args: argparse.Namespace) -> int:
    from actions import registry
    for action in registry.all_actions():
        doc = (action.__module__ and sys.modules[action.__module__].__doc__ or "").strip()
        print(f"{action.name}\t{doc.splitlines()[0] if doc else ''}")
    return 0


def show_one(args: argparse.Namespace) -> int:
    from actions import registry
    if args.name not in registry.names():
        print(f"enforcer actions: unknown action {args.name!r}; known: "
              f"{', '.join(registry.names())}", file=sys.stderr)
        return 2
    action = registry.get(args.name)
    doc = (sys.modules[action.__module__].__doc__ or "").strip()
    print(doc)
    print()
    print("required fields:", ", ".join(action.required_fields) or "none")
    print("destructive:", "yes" if action.destructive else "no")
    print("RBAC:", json.dumps(list(action.rbac)) if action.rbac else "none")
    print("example:", action.example)
    print("parameters:")
    print(json.dumps(action.params_type.json_schema(), indent=2, sort_keys=True))
    return 0


def rbac(args: argparse.Namespace) -> int:
    import yaml

    from actions import registry
    sys.stdout.write(yaml.safe_dump({"rules": registry.rbac_rules()}, sort_keys=False))
    return 0
