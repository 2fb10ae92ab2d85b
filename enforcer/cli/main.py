"""The `enforcer` command line: one module per subcommand, argparse throughout.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`func(args) -> int`. Exit codes: 0 success, 1 a finding (invalid rules, failed tests),
2 a usage mistake, 3+ an environment problem (see ProbeError).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from enforcer import __version__
from enforcer.cli import config_args, falco_flags, run
from enforcer.errors import ConfigError
from enforcer.outputs.escape import install_log_escaping

# Order here is the order in `enforcer --help`.
COMMAND_MODULES = [
    "enforcer.cli.validate",
    "enforcer.cli.test_cmd",
    "enforcer.cli.replay",
    "enforcer.cli.fields",
    "enforcer.cli.rules_cmd",
    "enforcer.cli.policies_cmd",
    "enforcer.cli.actions_cmd",
    "enforcer.cli.schema",
    "enforcer.cli.release",
    "enforcer.cli.probes",
    "enforcer.cli.doctor",
    "enforcer.cli.audit_cmd",
    "enforcer.cli.store_cmd",
    "enforcer.cli.ui",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enforcer",
        description="Runtime security agent: Falco rules over eBPF, with audited responses.",
    )
    parser.add_argument("--version", action="version", version=f"enforcer {__version__}")
    run.add_arguments(parser)  # `enforcer [--dry-run] ...` with no command runs the agent
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not written yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `enforcer` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        if args.command is None:
            install_log_escaping()  # log lines quote event fields: one line each, inert
            try:  # the live agent: its --config file's settings, under the command line
                args = config_args.reparse_with_config(parser, argv, args)
            except ConfigError as exc:
                for diagnostic in exc.diagnostics:
                    print(diagnostic, file=sys.stderr)
                print("enforcer: invalid --config file; fix the problems above (`enforcer "
                      "schema config` prints what it may hold)", file=sys.stderr)
                return exc.exit_code
            shot = falco_flags.one_shot_argv(args)  # Falco's -V, -L, -l RULE, --list
            if shot is not None:
                return main(shot)
            return run.run(args)
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
