"""`enforcer schema policy`: print the JSON Schema of response policy files."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("schema", help="print the JSON Schema of a file format",
                            description="Print the JSON Schema of a file format, for editors "
                                        "and CI linters.")
    parser.add_argument("kind", choices=["policy"], help="policy: response policy files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from enforcer.policy.schema import policy_schema
    json.dump(policy_schema(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0
