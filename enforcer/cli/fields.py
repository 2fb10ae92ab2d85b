"""`enforcer fields`: every field rules may use, with its type and description."""

from __future__ import annotations

import argparse
import json

from enforcer.rules.fields import all_fields


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fields", help="list the supported fields",
                       description="List every field the rules engine supports.")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)


def _shown(name: str, arg: str | None) -> str:
    if arg == "index":
        return f"{name}[N]"
    if arg == "name":
        return f"{name}.NAME, {name}[NAME]"
    if arg == "key":
        return f"{name}[KEY]"
    return name


def run(args: argparse.Namespace) -> int:
    specs = all_fields()
    if args.format == "json":
        print(json.dumps([{"name": f.name, "type": f.type, "description": f.desc,
                           "arg": f.arg} for f in specs], indent=1))
        return 0
    width = max(len(_shown(f.name, f.arg)) for f in specs)
    for f in specs:
        print(f"{_shown(f.name, f.arg):<{width}}  {f.type:<7}  {f.desc}")
    return 0
