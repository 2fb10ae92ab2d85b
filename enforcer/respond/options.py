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
from enforcer.policy.budget import Budget
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
                       default=int(os.environ.get("ENFORCER_ACTION_BUDGET", "20")),
                       help="destructive actions per minute before the agent turns itself "
                            "to dry-run (env ENFORCER_ACTION_BUDGET; default 20)")
    group.add_argument("--state-dir", default=os.environ.get("ENFORCER_STATE_DIR",
                                                             "/run/enforcer"),
                       help="quarantine state (env ENFORCER_STATE_DIR)")
    group.add_argument("--snapshot-dir",
                       default=os.environ.get("ENFORCER_SNAPSHOT_DIR",
                                              "/var/lib/enforcer/snapshots"),
                       help="where snapshots are written (env ENFORCER_SNAPSHOT_DIR)")


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


def responder_from_args(args: argparse.Namespace, *, policies: PolicySet | None = None,
                        hostname: str = "", audit: AuditSink | None = None,
                        on_critical: Callable[[Any], Any] | None = None) -> Responder:
    """Build the responder. Raises PolicyError (exit 1) for bad policies, AuditLogError
    (exit 3) when the audit log cannot be opened."""
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
                     budget=Budget(limit=args.action_budget, window=60.0),
                     state_dir=args.state_dir, snapshot_dir=args.snapshot_dir,
                     on_critical=on_critical, hostname=hostname)
