"""`enforcer [--dry-run] [--rules FILE|DIR...]`: the live agent on this host.

Alerts go to stdout, one per line (Falco JSON, or Falco's text line with --format text),
and are appended to --output-file too. SIGINT/SIGTERM stop it cleanly: probes detached,
outputs flushed, Falco's summary (with drop monitoring) printed on stderr. Environment
variables mirror the flags: ENFORCER_RULES, ENFORCER_DRY_RUN, ENFORCER_FORMAT,
ENFORCER_OUTPUT_FILE, ENFORCER_CONTAINER_SOCKET.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

from enforcer.errors import EnforcerError, PolicyError, ProbeError


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent's options, on the top-level parser (`enforcer --dry-run`)."""
    from enforcer.cli.rules_args import add_rules_option  # noqa: PLC0415

    group = parser.add_argument_group("live agent (when no command is given)")
    group.add_argument("--dry-run", action="store_true", default=_env_flag("ENFORCER_DRY_RUN"),
                       help="detect and report, never act (responses are only planned)")
    group.add_argument("--format", choices=("json", "text"),
                       default=os.environ.get("ENFORCER_FORMAT", "json"),
                       help="alert format on stdout (default: Falco JSON)")
    group.add_argument("--output-file", metavar="PATH",
                       default=os.environ.get("ENFORCER_OUTPUT_FILE"),
                       help="also append alerts to this file")
    group.add_argument("--container-socket", metavar="PATH",
                       default=os.environ.get("ENFORCER_CONTAINER_SOCKET"),
                       help="Docker-compatible API socket (default: podman's, then docker's)")
    group.add_argument("--no-kernel-filter", action="store_true",
                       help="send every open to userspace (for comparison; slower)")
    add_rules_option(parser)
    from enforcer.respond.options import add_arguments as add_response_arguments  # noqa: PLC0415
    add_response_arguments(parser)  # --policies, --audit-log, … (shares --dry-run)


def run(args: argparse.Namespace, on_alert: Any = None) -> int:
    """Run the agent until SIGINT/SIGTERM; returns the exit code."""
    from enforcer.agent import Agent  # noqa: PLC0415
    from enforcer.cli.rules_args import load_or_report, rules_paths  # noqa: PLC0415
    from enforcer.outputs.stream import FileOutput, StreamOutput  # noqa: PLC0415
    from enforcer.respond.options import (  # noqa: PLC0415
        load_policies_from_args,
        responder_from_args,
    )
    from enforcer.rules.engine import Engine  # noqa: PLC0415

    loaded = load_or_report("", rules_paths(args))
    if isinstance(loaded, int):
        return loaded
    engine = Engine(loaded)
    try:
        policies = load_policies_from_args(args)
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    outputs: list[Any] = [StreamOutput(args.format)]
    if args.output_file:
        try:
            outputs.append(FileOutput(args.output_file, args.format))
        except OSError as exc:
            print(f"enforcer: cannot open --output-file {args.output_file}: {exc.strerror}",
                  file=sys.stderr)
            return 2
    holder: dict[str, Any] = {}
    kernel_kill = _kernel_killer(args, policies, loaded, holder)
    agent = Agent(engine, outputs, on_alert=on_alert, rules=engine.rules,
                  kernel_filter=not args.no_kernel_filter,
                  container_socket=args.container_socket, kernel_kill=kernel_kill)
    stop = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        agent.open()
    except ProbeError as exc:
        print(f"enforcer: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        responder = responder_from_args(
            args, policies=policies, on_critical=_on_critical(outputs, kernel_kill))
    except EnforcerError as exc:
        agent.close()
        print(f"enforcer: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    holder["audit"] = responder.audit
    if on_alert is None:
        agent.on_alert = responder.submit
    responder.start()
    acting = sum(not p.dry_run for p in policies.policies)
    mode = "dry-run" if args.dry_run else (
        f"{len(policies.policies)} response policies ({acting} acting)")
    filt = agent.probe_config.open_prefixes
    filt_text = ("every open" if filt is None else f"opens matching {len(filt)} path prefixes"
                 f" and {len(agent.probe_config.open_suffixes)} suffixes")
    print(f"enforcer: ready: {len(engine.rules)} rules, {len(agent.attachment.syscalls)} "
          f"syscalls attached, kernel passes {filt_text}; {mode}"
          + (f"; in-kernel kill armed for {len(kernel_kill.rules)} rules" if kernel_kill else ""),
          file=sys.stderr, flush=True)
    try:
        agent.run(stop)
    finally:
        agent.finish_outputs()
        responder.stop()
        sys.stderr.write(agent.summary())
        sys.stderr.write(responder.summary() + "\n")
        if kernel_kill is not None:
            kills, stale, lost = kernel_kill.stats()
            sys.stderr.write(f"in-kernel kill: {kills} processes killed in the kernel, "
                             f"{stale} times not (changed since exec), {lost} kill "
                             "records lost\n")
        sys.stderr.flush()
        agent.detach()
    return 0


def _on_critical(outputs: list[Any], kernel_kill: Any) -> Any:
    """Critical alerts go to the outputs; the budget breaker also stops the in-kernel kill
    (in-kernel kills count against the budget through their userspace backstop)."""
    def emit(alert: Any) -> None:
        from enforcer.respond.responder import BREAKER_RULE  # noqa: PLC0415

        if kernel_kill is not None and alert.rule == BREAKER_RULE:
            kernel_kill.switch_off()
        for out in outputs:
            out.emit(alert)
    return emit


def _kernel_killer(args: argparse.Namespace, policies: Any, ruleset: Any,
                   holder: dict[str, Any]) -> Any:
    """The in-kernel kill for the acting policies' in_kernel rules, or None (always None
    with --dry-run: a dry run never kills)."""
    from enforcer.kernel_arm import KernelKiller  # noqa: PLC0415
    from enforcer.policy.in_kernel import in_kernel_rules  # noqa: PLC0415

    rules, warnings = in_kernel_rules(policies, ruleset, args.dry_run)
    for w in warnings:
        print(f"enforcer: warning: {w}", file=sys.stderr)
    if not rules:
        return None

    def on_kill(rec: Any, rule: str) -> None:
        from enforcer.audit.record import ACTION, AuditRecord, new_match_id  # noqa: PLC0415

        print(f"enforcer: killed in kernel: rule={rule!r} pid={rec.tgid} comm={rec.comm} "
              f"path={rec.path}", file=sys.stderr, flush=True)
        audit = holder.get("audit")
        if audit is not None:
            audit.record(AuditRecord(
                ACTION, new_match_id(), "killed-in-kernel", rule=rule, action="kill",
                target={"pid": rec.tgid, "tid": rec.tid, "comm": rec.comm}, dry_run=False,
                message=f"SIGKILL from the kernel at {'exit' if rec.at_exit else 'entry'} "
                        f"of the open of {rec.path}",
                detail={"path": rec.path, "ret": rec.ret, "in_kernel": True}))

    return KernelKiller(rules, os.getpid(), on_kill)
