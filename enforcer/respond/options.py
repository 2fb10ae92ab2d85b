"""The responder's command-line options and their ENFORCER_* environment mirrors, for the
commands that run policies (the live agent, replay): three calls wire everything in.

    add_arguments(parser)                      # --policies, --dry-run, --audit-log, …
    policies = load_policies_from_args(args)   # early: PolicyError -> print, exit 1
    ...                                        # privilege checks, probes
    responder = responder_from_args(args, policies=policies, on_critical=outputs.emit)
                                               # AuditLogError -> print, exit 3

`--policies FILE|DIR...` replaces the bundled policies (as `--rules` does for rules).
Without `--dry-run`, a policy whose `dry_run` is false acts."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from enforcer.audit.jsonl import JsonlAudit
from enforcer.audit.record import AuditSink
from enforcer.cli.cumulative import Cumulative
from enforcer.errors import EnforcerError
from enforcer.policy.blast_radius import (
    DEFAULT_COOLOFF_S,
    DEFAULT_WINDOW_S,
    DEFAULT_WORKLOADS,
    BlastRadius,
    BreakerLimits,
)
from enforcer.policy.guards import DEFAULT_PROTECTED_NAMESPACES, Guards
from enforcer.policy.loader import load_policies
from enforcer.policy.model import PolicySet
from enforcer.resources import default_responses_dir
from enforcer.respond.responder import Responder


def _env_list(name: str) -> list[str]:
    return [v for v in os.environ.get(name, "").split(",") if v]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the response options; an option the parser already has (the live agent's own
    `--dry-run`) is left as it is, and read under the same name."""
    group = _Tolerant(parser.add_argument_group("responses"), parser)
    group.add_argument("--policies", nargs="+", action=Cumulative, metavar="FILE|DIR",
                       default=_env_list("ENFORCER_POLICIES") or None,
                       help="response policy files or directories, loaded in order and "
                            "replacing the bundled ones; repeatable (`--policies A "
                            "--policies B` loads both; env ENFORCER_POLICIES, comma-separated)")
    group.add_argument("--dry-run", action="store_true",
                       default=os.environ.get("ENFORCER_DRY_RUN", "").lower() in ("1", "true"),
                       help="decide and audit every response, mutate nothing "
                            "(env ENFORCER_DRY_RUN)")
    group.add_argument("--audit-log", metavar="FILE",
                       default=os.environ.get("ENFORCER_AUDIT_LOG",
                                              "/var/log/enforcer/audit.jsonl"),
                       help="JSONL audit log, '-' for stderr (env ENFORCER_AUDIT_LOG)")
    group.add_argument("--protected-namespace", action="append", metavar="NS",
                       default=_env_list("ENFORCER_PROTECTED_NAMESPACES"),
                       help="never act in this namespace, in addition to kube-system and "
                            "the agent's own (repeatable; env ENFORCER_PROTECTED_NAMESPACES)")
    group.add_argument("--action-budget", type=int, metavar="N",
                       default=_env_int("ENFORCER_ACTION_BUDGET"),
                       help="deprecated and ignored (a warning says so): the node-wide "
                            "budget that turned the agent to dry-run is replaced by each "
                            "policy's blast-radius breaker (--breaker-workloads) (env "
                            "ENFORCER_ACTION_BUDGET)")
    group.add_argument("--breaker-workloads", type=int, metavar="N",
                       default=int(os.environ.get("ENFORCER_BREAKER_WORKLOADS",
                                                  str(DEFAULT_WORKLOADS))),
                       help="a policy that acts on more than N distinct workloads (pods, "
                            "containers, host users) per --breaker-window is suspended for "
                            "new workloads (env ENFORCER_BREAKER_WORKLOADS; default "
                            f"{DEFAULT_WORKLOADS}; a policy's `breaker` overrides it)")
    group.add_argument("--breaker-window", metavar="DURATION",
                       default=os.environ.get("ENFORCER_BREAKER_WINDOW",
                                              f"{DEFAULT_WINDOW_S:g}s"),
                       help="the blast-radius window (env ENFORCER_BREAKER_WINDOW; default "
                            "10m)")
    group.add_argument("--breaker-cooloff", metavar="DURATION",
                       default=os.environ.get("ENFORCER_BREAKER_COOLOFF",
                                              f"{DEFAULT_COOLOFF_S:g}s"),
                       help="how long a suspended policy waits before it admits one new "
                            "workload again (half-open) (env ENFORCER_BREAKER_COOLOFF; "
                            "default 10m)")
    group.add_argument("--state-dir", default=os.environ.get("ENFORCER_STATE_DIR",
                                                             "/run/enforcer"),
                       help="quarantine state (env ENFORCER_STATE_DIR)")
    group.add_argument("--pre-kill-timeout", metavar="DURATION",
                       default=os.environ.get("ENFORCER_PRE_KILL_TIMEOUT", "2s"),
                       help="how long a kill waits for the actions its policy lists before it "
                            "(a snapshot); then it goes ahead, audited (env "
                            "ENFORCER_PRE_KILL_TIMEOUT; default 2s)")
    group.add_argument("--control-socket", metavar="PATH",
                       default=os.environ.get("ENFORCER_CONTROL_SOCKET", ""),
                       help="unix socket (mode 0600) for `enforcer policies resume|status`; "
                            "default STATE_DIR/control.sock, 'off' for none "
                            "(env ENFORCER_CONTROL_SOCKET)")
    group.add_argument("--snapshot-dir",
                       default=os.environ.get("ENFORCER_SNAPSHOT_DIR",
                                              "/var/lib/enforcer/snapshots"),
                       help="where snapshots are written (env ENFORCER_SNAPSHOT_DIR)")


def _env_int(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    try:
        return int(text) if text else None
    except ValueError:
        return None  # only read to warn that it is ignored


def deprecation_warnings(args: argparse.Namespace) -> list[str]:
    """What the agent says at start about settings it accepts and ignores."""
    if getattr(args, "action_budget", None) is None:
        return []
    return ["--action-budget (ENFORCER_ACTION_BUDGET, guards.action_budget, the chart's "
            "actionBudget) is deprecated and ignored: each policy has a blast-radius breaker "
            "instead; set --breaker-workloads/--breaker-window/--breaker-cooloff (guards."
            "breaker in the config file, breaker in the chart) or a policy's `breaker` "
            "(docs/blast-radius.md)"]


class _Tolerant:
    def __init__(self, group: argparse._ArgumentGroup, parser: argparse.ArgumentParser):
        self.group = group
        self.parser = parser

    def add_argument(self, *flags: str, **kwargs: Any) -> None:
        if any(flag in self.parser._option_string_actions for flag in flags):
            return
        self.group.add_argument(*flags, **kwargs)


class AuditLogError(EnforcerError):
    """The audit log cannot be opened: an environment problem (exit 3)."""

    exit_code = 3


def load_policies_from_args(args: argparse.Namespace) -> PolicySet:
    """`--policies`, or the bundled policies. Raises PolicyError (print it, exit 1)."""
    return load_policies(args.policies or [default_responses_dir()])


class BreakerOptionError(EnforcerError):
    """A --breaker-* value is wrong: a usage mistake (exit 2)."""

    exit_code = 2


def breaker_defaults(args: argparse.Namespace) -> BreakerLimits:
    """The agent-wide blast-radius limits. Raises BreakerOptionError on a bad value."""
    from enforcer.units import parse_duration  # noqa: PLC0415

    workloads = getattr(args, "breaker_workloads", DEFAULT_WORKLOADS)
    if workloads < 1:
        raise BreakerOptionError(f"--breaker-workloads must be at least 1, got {workloads}")
    try:
        window = parse_duration(getattr(args, "breaker_window", DEFAULT_WINDOW_S))
        cooloff = parse_duration(getattr(args, "breaker_cooloff", DEFAULT_COOLOFF_S))
    except ValueError as exc:
        raise BreakerOptionError(f"--breaker-window/--breaker-cooloff: {exc}") from None
    return BreakerLimits(workloads, window, cooloff)


def responder_from_args(args: argparse.Namespace, *, policies: PolicySet | None = None,
                        hostname: str = "", audit: AuditSink | None = None,
                        on_critical: Callable[[Any], Any] | None = None,
                        serve_control: bool = False) -> Responder:
    """Build the responder. Raises PolicyError (exit 1) for bad policies, AuditLogError
    (exit 3) when the audit log cannot be opened. `serve_control`: the live agent, which
    serves `enforcer policies resume|status` on its control socket."""
    if policies is None:
        policies = load_policies_from_args(args)
    if audit is None:
        try:
            audit = JsonlAudit(args.audit_log)
        except OSError as exc:
            raise AuditLogError(
                f"cannot open the audit log {args.audit_log}: {exc.strerror}; run as root "
                "or choose another file with --audit-log (or ENFORCER_AUDIT_LOG)") from None
    node_name = getattr(args, "node_name", None) or os.environ.get("NODE_NAME") or None
    guards = Guards(protected_namespaces=list(DEFAULT_PROTECTED_NAMESPACES)
                    + list(args.protected_namespace or []), node_name=node_name)
    return Responder(policies, audit, dry_run=args.dry_run,
                     node_name=node_name, guards=guards,
                     blast_radius=BlastRadius(breaker_defaults(args)),
                     state_dir=args.state_dir, snapshot_dir=args.snapshot_dir,
                     on_critical=on_critical, hostname=hostname,
                     control_socket=control_socket_path(args) if serve_control else None,
                     pre_kill_timeout=_duration(args, "pre_kill_timeout", 2.0))


def _duration(args: argparse.Namespace, name: str, default: float) -> float:
    from enforcer.units import parse_duration  # noqa: PLC0415

    try:
        return parse_duration(getattr(args, name, default))
    except ValueError as exc:
        raise BreakerOptionError(f"--{name.replace('_', '-')}: {exc}") from None


def control_socket_path(args: argparse.Namespace) -> str | None:
    """--control-socket, else STATE_DIR/control.sock; None for 'off'."""
    raw = getattr(args, "control_socket", "") or ""
    if raw.lower() in ("off", "none"):
        return None
    return raw or os.path.join(getattr(args, "state_dir", "/run/enforcer"), "control.sock")
