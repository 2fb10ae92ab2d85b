"""`enforcer schema policy|config`: print the JSON Schema of response policy files, or of
the agent's configuration file (`enforcer --config FILE`)."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("schema", help="print the JSON Schema of a file format",
                            description="Print the JSON Schema of a file format, for editors "
                                        "and CI linters.")
    parser.add_argument("kind", choices=["policy", "config"],
                        help="policy: response policy files; config: the agent's --config "
                             "file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.kind == "config":
        from enforcer.config.schema import config_schema
        schema = config_schema()
    else:
        from enforcer.policy.schema import policy_schema
        schema = policy_schema()
    json.dump(schema, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0
