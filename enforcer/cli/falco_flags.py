"""Falco's everyday flags on the live agent's command line, mapped onto our commands:

    -V FILE      validate rule files and exit           = enforcer validate FILE...
    -L           every rule's name and description      = enforcer rules describe
    -l RULE      one rule's name and description        = enforcer rules describe RULE
    --list       the fields rules may use               = enforcer fields
    -U           unbuffered outputs (ours always are: accepted, changes nothing)
    -M SECONDS   stop after SECONDS (a duration: 30, 30s, 5m)

`-c FILE` and `-o KEY=VALUE` are enforcer.cli.config_args', `-r` enforcer.cli.rules_args'.
`--dry-run` keeps our meaning (detect and report, never act); Falco's `--dry-run` (load
everything, process no event) is `-V` or `enforcer validate` here."""

from __future__ import annotations

import argparse
from typing import Any

from enforcer.units import duration_argument


def add_falco_flags(parser: argparse.ArgumentParser | Any) -> None:
    """Add Falco's one-shot and run-control flags to the live agent's parser."""
    parser.add_argument("-V", "--validate", action="append", metavar="FILE", default=None,
                        help="validate these rule files and exit, as Falco's -V "
                             "(repeatable; = enforcer validate FILE...)")
    parser.add_argument("-L", dest="list_rules", action="store_true",
                        help="print every loaded rule's name and description and exit "
                             "(with json_output: every detail)")
    parser.add_argument("-l", dest="describe_rule", metavar="RULE", default=None,
                        help="print RULE's name and description and exit")
    parser.add_argument("--list", dest="list_fields", nargs="?", const="syscall",
                        default=None, metavar="SOURCE",
                        help="print the fields rules may use and exit (= enforcer fields)")
    parser.add_argument("-U", "--unbuffered", action="store_true",
                        help="accepted for Falco's sake: every alert is already flushed as "
                             "it is written")
    parser.add_argument("-M", dest="stop_after", type=duration_argument, default=None,
                        metavar="SECONDS",
                        help="stop after this long (seconds, or 30s, 5m), as Falco's -M")


def one_shot_argv(args: argparse.Namespace) -> list[str] | None:
    """The command a one-shot Falco flag stands for, or None to run the agent."""
    if args.validate:
        return ["validate", *args.validate]
    rules = ["--rules", *args.rules] if getattr(args, "rules", None) else []
    fmt = ["--format", "json"] if getattr(args, "json_output", False) else []
    if args.list_rules:
        return ["rules", "describe", *rules, *fmt]
    if args.describe_rule is not None:
        return ["rules", "describe", args.describe_rule, *rules, *fmt]
    if args.list_fields is not None:
        return ["fields"]
    return None
