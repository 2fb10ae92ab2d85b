"""Options choosing which rules run and how they report, shared by `enforcer replay` and
the live agent; each mirrors a key of Falco's configuration:

  --min-priority P          `priority`: rules less severe than P are disabled
  --enable-rule/--disable-rule NAME, --enable-tag/--disable-tag TAG
                            `rules: [{enable: {rule: ...}}, {disable: {tag: ...}}]`,
                            applied in the order given; names may use `*` wildcards
  --rule-matching first|all `rule_matching`
  --append-output FILE      `append_output` (a YAML file with that list); without it,
                            Falco's shipped default `[{suggested_output: true}]`
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from enforcer.errors import RuleError
from enforcer.priority import Priority
from enforcer.rules.append_output import DEFAULT_APPEND_OUTPUT, load_append_output
from enforcer.rules.engine import RULE_MATCHING, Engine
from enforcer.rules.ruleset import RuleSet
from enforcer.rules.selection import at_least, set_enabled

_SELECTIONS = "rule_selections"


class _Selection(argparse.Action):
    """Collects every enable/disable option into one ordered list of
    (enable, kind, value), since Falco applies its `rules:` selections in order."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        enable, kind = self.const
        selections = list(getattr(namespace, _SELECTIONS, None) or [])
        selections.append((enable, kind, values))
        setattr(namespace, _SELECTIONS, selections)


def _priority(text: str) -> Priority:
    try:
        return Priority.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_selection_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """Add the rule selection and output options to `parser` (or an argument group)."""
    parser.add_argument(
        "--min-priority", metavar="PRIORITY", type=_priority, default=None,
        help="disable rules less severe than PRIORITY (emergency … debug), as Falco's "
             "`priority` setting")
    for flag, const, what in (
            ("--enable-rule", (True, "rule"), "enable the rules named NAME (`*` wildcards)"),
            ("--disable-rule", (False, "rule"), "disable the rules named NAME (`*` wildcards)"),
            ("--enable-tag", (True, "tag"), "enable the rules having tag TAG"),
            ("--disable-tag", (False, "tag"), "disable the rules having tag TAG")):
        parser.add_argument(flag, action=_Selection, const=const, dest=_SELECTIONS,
                            default=None, metavar="TAG" if const[1] == "tag" else "NAME",
                            help=f"{what}; repeatable, applied in order as Falco's `rules:`")
    parser.add_argument(
        "--rule-matching", choices=RULE_MATCHING, default="all",
        help="report every rule an event matches (all, the default) or only the first, "
             "in rule order (first), as Falco's `rule_matching`")
    parser.add_argument(
        "--append-output", metavar="FILE", default=None,
        help="YAML file with Falco's `append_output:` list: extra output text and fields "
             "for the rules each entry matches; it replaces the default, Falco's "
             "`[{suggested_output: true}]` (container and pod fields on every alert; "
             "`append_output: []` turns that off)")


def select_rules(ruleset: RuleSet, args: argparse.Namespace) -> RuleSet:
    """`ruleset` after the --enable/--disable options (in order), then --min-priority,
    which as in Falco no enable can override."""
    for enable, kind, value in getattr(args, _SELECTIONS, None) or []:
        if kind == "rule":
            ruleset = set_enabled(ruleset, enable, names=[value])
        else:
            ruleset = set_enabled(ruleset, enable, tags=[value])
    minimum = getattr(args, "min_priority", None)
    if minimum is not None:
        ruleset = at_least(ruleset, minimum)
    return ruleset


def engine_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Engine keyword options from the parsed flags; RuleError when --append-output is
    invalid."""
    options: dict[str, Any] = {"rule_matching": getattr(args, "rule_matching", "all")}
    # falco.yaml's append_output (None: the file has none), then the --append-output file's
    entries = list(getattr(args, "append_output_entries", None) or [])
    path = getattr(args, "append_output", None)
    if path:
        entries += load_append_output(path)
    if getattr(args, "append_output_entries", None) is None and not path:
        entries = list(DEFAULT_APPEND_OUTPUT)  # neither falco.yaml nor a file says otherwise
    options["append_output"] = entries
    return options


def build_engine(ruleset: RuleSet, args: argparse.Namespace, prog: str,
                 hostname: str | None = None) -> Engine | int:
    """The Engine for `ruleset` with the selection and output flags applied; on a bad
    --append-output file, prints FILE:LINE:COL problems on stderr and returns exit code 1."""
    try:
        options = engine_options_from_args(args)
    except RuleError as exc:
        for d in exc.diagnostics:
            print(d, file=sys.stderr)
        print(f"enforcer{' ' + prog if prog else ''}: invalid --append-output file; fix the "
              "problems above", file=sys.stderr)
        return 1
    return Engine(select_rules(ruleset, args), hostname=hostname, **options)
