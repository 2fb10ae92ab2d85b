"""`enforcer release TARGET`: lift a node-local quarantine (interface name, container id,
or namespace/pod); `enforcer release --list` shows what is quarantined."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("release", help="lift a node-local quarantine",
                            description="Lift a quarantine put by the quarantine action.")
    parser.add_argument("target", nargs="?",
                        help="host-side interface, container id (12+ chars), or NS/POD")
    parser.add_argument("--list", action="store_true", help="list current quarantines")
    parser.add_argument("--state-dir", default=os.environ.get("ENFORCER_STATE_DIR",
                                                              "/run/enforcer"),
                        help="the agent's state directory (env ENFORCER_STATE_DIR)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from actions.quarantine import quarantined, release
    from enforcer.errors import ActionError
    if args.list:
        for record in quarantined(args.state_dir):
            print(f"{record['interface']}\tpid {record.get('pid')}\t"
                  f"{record.get('pod') or record.get('container.id') or '-'}\t"
                  f"{record.get('rule', '')}")
        return 0
    if not args.target:
        print("enforcer release: give a TARGET (interface, container id or NS/POD), or "
              "--list", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("enforcer release: must run as root (it changes the node's tc filters)",
              file=sys.stderr)
        return 3
    from enforcer.adapters import netlink
    try:
        released = release(args.state_dir, args.target, netlink)
    except ActionError as exc:
        print(f"enforcer release: {exc}", file=sys.stderr)
        return 1
    if not released:
        print(f"enforcer release: nothing quarantined matches {args.target!r} "
              "(see `enforcer release --list`)", file=sys.stderr)
        return 1
    for record in released:
        word = "released" if record["result"] == "done" else "was not quarantined"
        print(f"{record['interface']}: {word}")
    return 0
