"""`enforcer replay EVENTS.jsonl --rules FILE|DIR...`: evaluate recorded events.

Each line of EVENTS is one JSON object keyed by Falco field names (see enforcer.event).
Alerts go to stdout, one per line (Falco JSON, or Falco's text line with --format text);
a line that is not a JSON object is reported on stderr with its line number and skipped;
Falco's summary is printed on stderr at the end. Which rules run and how they report
follows the options of enforcer.cli.selection_args (Falco's `priority`, `rules:`,
`rule_matching` and `append_output`).
"""

from __future__ import annotations

import argparse
import io
import json
import sys

from enforcer.cli.rules_args import add_rules_option, load_or_report, rules_paths
from enforcer.cli.selection_args import add_selection_arguments, build_engine
from enforcer.outputs.formats import format_alert
from enforcer.outputs.summary import AlertStats
from enforcer.rules.engine import Engine


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay", help="evaluate events from a JSONL file, print Falco alerts",
        description="Evaluate recorded events (one JSON object per line, keyed by Falco "
                    "field names) against rules; print one alert per match and Falco's "
                    "summary on stderr.")
    p.add_argument("events", metavar="EVENTS.jsonl", help="event file, or - for stdin")
    add_rules_option(p)
    p.add_argument("--format", choices=("json", "text"), default="json",
                   help="alert format on stdout (default: Falco JSON)")
    p.add_argument("--hostname", default=None, help="hostname put in alerts")
    add_selection_arguments(p.add_argument_group("rule selection and output (as Falco's "
                                                 "configuration)"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report("replay", rules_paths(args))
    if isinstance(loaded, int):
        return loaded
    engine = build_engine(loaded, args, "replay", hostname=args.hostname)
    if isinstance(engine, int):
        return engine
    stats = AlertStats(rule_order=list(loaded.rules))
    try:
        # undecodable bytes become U+FFFD, so such a line is reported as bad JSON, not a crash
        stream = (io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
                  if args.events == "-"
                  else open(args.events, encoding="utf-8", errors="replace"))
    except OSError as exc:
        print(f"enforcer replay: cannot read {args.events}: {exc.strerror}", file=sys.stderr)
        return 2
    name = "<stdin>" if args.events == "-" else args.events
    try:
        with stream:
            _replay(engine, stats, stream, name, args.format)
    except KeyboardInterrupt:
        sys.stdout.flush()
        sys.stderr.write(stats.format())  # Falco prints its summary when interrupted too
        return 130
    sys.stdout.flush()
    sys.stderr.write(stats.format())
    return 0


def _replay(engine: Engine, stats: AlertStats, stream, name: str, fmt: str) -> None:
    """Evaluate each JSONL line; bad lines are reported with their number and skipped."""
    out = sys.stdout
    for lineno, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            print(f"{name}:{lineno}:{exc.colno}: invalid JSON: {exc.msg}; line skipped",
                  file=sys.stderr)
            continue
        if not isinstance(event, dict):
            print(f"{name}:{lineno}:1: an event must be a JSON object, not "
                  f"{type(event).__name__}; line skipped", file=sys.stderr)
            continue
        for alert in engine.evaluate(event):
            stats.record(alert)
            out.write(format_alert(alert, fmt) + "\n")
