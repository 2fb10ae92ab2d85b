"""`enforcer [--dry-run] [--rules FILE|DIR...] [--policies FILE|DIR...]`: the live agent.

With `--source ebpf` (the default) it watches this host's kernel; with `--source
falco-http` it answers alerts POSTed by an existing Falco. Either way alerts go to stdout,
one per line (Falco JSON, or Falco's text line with --format text), and to --output-file,
--webhook and --program-output; matches are answered by the response policies, audited in
JSONL (and traced, counted, stored); /metrics, /healthz, /readyz (and /ui) are served on
--http-addr; the rules and policies paths are watched and reloaded. SIGINT/SIGTERM stop it
cleanly: probes detached, outputs flushed, Falco's summary (with drop monitoring) and the
responses by action and outcome printed on stderr. ENFORCER_* variables mirror the flags;
`--config FILE` sets them in YAML (enforcer.cli.config_args: flag > file > ENFORCER_* >
OTEL_* > defaults).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import SimpleNamespace
from typing import Any

from enforcer.errors import ProbeError


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The agent's options, on the top-level parser (`enforcer --dry-run`)."""
    from enforcer.cli.config_args import add_config_option  # noqa: PLC0415
    from enforcer.cli.rules_args import add_rules_option  # noqa: PLC0415

    group = parser.add_argument_group("live agent (when no command is given)")
    add_config_option(group)
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
    group.add_argument("--cri-socket", metavar="PATH",
                       default=os.environ.get("ENFORCER_CRI_SOCKET"),
                       help="CRI socket of containerd or cri-o, for container and pod metadata "
                            "(default: containerd's, then cri-o's)")
    group.add_argument("--no-kernel-filter", action="store_true",
                       help="send every open to userspace (for comparison; slower)")
    add_rules_option(parser)
    from enforcer.respond.options import add_arguments as add_response_arguments  # noqa: PLC0415
    add_response_arguments(parser)  # --policies, --audit-log, … (shares --dry-run)
    from enforcer.cli.observe_args import add_arguments as add_observe_arguments  # noqa: PLC0415
    add_observe_arguments(parser)  # --http-addr, --webhook, --extra-field, --source, …
    from enforcer.cli.agent_args import add_arguments as add_agent_arguments  # noqa: PLC0415
    add_agent_arguments(parser)  # --ui, --store, --node-name, --reload-interval, …
    from enforcer.cli.falco_flags import add_falco_flags  # noqa: PLC0415
    add_falco_flags(parser.add_argument_group("Falco's flags (-V, -L, -l, --list, -U, -M)"))
    from enforcer.cli.selection_args import add_selection_arguments  # noqa: PLC0415
    add_selection_arguments(parser.add_argument_group(
        "rule selection (Falco's priority, rules:, rule_matching, append_output)"))


def _stop_on_signals(after: float | None = None) -> threading.Event:
    """An event set by SIGINT/SIGTERM, or `after` seconds from now (Falco's -M)."""
    stop = threading.Event()

    def _stop(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    if after is not None:
        timer = threading.Timer(after, stop.set)
        timer.daemon = True
        timer.start()
    return stop


def _mode(args: argparse.Namespace, pipeline: Any) -> str:
    policies = pipeline.active.policies.policies
    acting = sum(not p.dry_run for p in policies)
    if args.dry_run:
        return f"dry-run, {len(policies)} response policies"
    return f"{len(policies)} response policies ({acting} acting)"


def _endpoints(args: argparse.Namespace, pipeline: Any) -> str:
    parts = []
    if pipeline.http is not None:
        parts.append(f"http on port {pipeline.http.port}" + (" with /ui" if args.ui else ""))
    if pipeline.tracer.exporting:
        parts.append("traces exported over OTLP")
    if pipeline.store is not None:
        parts.append(f"store {pipeline.store.path}")
    return ("; " + ", ".join(parts)) if parts else ""


def run(args: argparse.Namespace) -> int:
    """Run the agent until SIGINT/SIGTERM; returns the exit code."""
    from enforcer.cli.agent_wiring import WiringError, build_pipeline, start_http  # noqa: PLC0415

    if args.source == "ebpf":
        from enforcer.adapters.bcc_probe import require_privileges  # noqa: PLC0415

        try:  # before anything else is opened: not being root is the first thing to say
            require_privileges()
        except ProbeError as exc:
            print(f"enforcer: {exc}", file=sys.stderr)
            return exc.exit_code
    try:
        pipeline = build_pipeline(args)
    except WiringError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    try:
        start_http(args, pipeline)
    except WiringError as exc:
        pipeline.stop()
        print(exc, file=sys.stderr)
        return exc.exit_code
    if args.source == "falco-http":
        return _run_falco_http(args, pipeline)
    return _run_ebpf(args, pipeline)


def _run_ebpf(args: argparse.Namespace, pipeline: Any) -> int:
    from enforcer.agent import Agent  # noqa: PLC0415
    from enforcer.sources.probe import ProbeConfig  # noqa: PLC0415

    kernel_kill = _kernel_killer(args, pipeline)
    # falco.yaml's engine block sizes the ring (enforcer.config.ring_buffer)
    probe = ProbeConfig(agent_tgid=os.getpid(), ringbuf_pages=getattr(
        args, "ringbuf_pages", None) or ProbeConfig.ringbuf_pages)
    print(f"enforcer: ring buffer {probe.ringbuf_pages * os.sysconf('SC_PAGE_SIZE') >> 10} "
          "KiB, one for all CPUs", file=sys.stderr, flush=True)
    agent = Agent(pipeline, (), on_alert=pipeline.publish, rules=pipeline.rules,
                  probe_config=probe,
                  kernel_filter=not args.no_kernel_filter,
                  container_socket=args.container_socket, proc_root=args.host_proc,
                  kernel_kill=kernel_kill, cri_socket=args.cri_socket)
    pipeline.metrics.read_kernel_drops_with(lambda: agent.drops.last)
    pipeline.metrics.read_kernel_drop_counts_with(lambda: agent.drop_counts)
    # falco.yaml's syscall_event_drops (actions, rate, max_burst); alerts go to the outputs
    agent.drops.on_drop = tuple(getattr(args, "drop_actions", ("log",)))
    agent.drops.rate = getattr(args, "drop_rate", agent.drops.rate)
    agent.drops.max_burst = getattr(args, "drop_max_burst", agent.drops.max_burst)
    agent.drops.threshold = getattr(args, "drop_threshold", agent.drops.threshold)
    agent.drops.alert = pipeline.publish
    if kernel_kill is not None:
        pipeline.metrics.read_in_kernel_kills_with(kernel_kill.stats)
    stop = _stop_on_signals(getattr(args, "stop_after", None))
    try:
        agent.open()
    except ProbeError as exc:
        pipeline.stop()
        print(f"enforcer: {exc}", file=sys.stderr)
        return exc.exit_code
    pipeline.on_rules_changed = _reattacher(agent, pipeline)
    if kernel_kill is not None:
        pipeline.on_rules_changed = _kernel_kill_on_reload(
            args, kernel_kill, pipeline.on_rules_changed)
    pipeline.start()
    pipeline.mark_attached(f"{len(agent.attachment.syscalls)} syscalls")
    filt = agent.probe_config.open_prefixes
    filt_text = ("every open" if filt is None else f"opens matching {len(filt)} path prefixes"
                 f" and {len(agent.probe_config.open_suffixes)} suffixes")
    print(f"enforcer: ready: {len(pipeline.rules)} rules, {len(agent.attachment.syscalls)} "
          f"syscalls attached, kernel passes {filt_text}; {_mode(args, pipeline)}; policy "
          f"digest {pipeline.active.short_digest}{_endpoints(args, pipeline)}"
          + (f"; in-kernel kill armed for {len(kernel_kill.rules)} rules" if kernel_kill
             else ""),
          file=sys.stderr, flush=True)
    try:
        agent.run(stop)
    finally:
        agent.finish_outputs()
        pipeline.stop()
        sys.stderr.write(agent.drops.format())
        sys.stderr.write(pipeline.summary())
        if kernel_kill is not None:
            kills, stale, lost = kernel_kill.stats()
            sys.stderr.write(f"in-kernel kill: {kills} processes killed in the kernel, "
                             f"{stale} times not (changed since exec), {lost} kill "
                             "records lost\n")
        sys.stderr.flush()
        agent.detach()  # slow on a busy host (an RCU grace period per tracepoint): last
    return 0


def _in_kernel_choice(args: argparse.Namespace, bundle: Any) -> tuple[list[Any], list[str]]:
    from enforcer.policy.in_kernel import in_kernel_rules  # noqa: PLC0415

    selected = SimpleNamespace(rules={r.name: r for r in bundle.engine.rules})
    return in_kernel_rules(bundle.policies, selected, args.dry_run)


def _kernel_killer(args: argparse.Namespace, pipeline: Any) -> Any:
    """The in-kernel kill for the acting policies' in_kernel rules, or None (always None
    with --dry-run: a dry run never kills). In-kernel kills are audited; their userspace
    backstop counts them in the policy's blast radius (as a new workload only), and the
    arming asks the responder's admission (breakers, protected namespaces) per process, so
    a suspended policy stops arming new workloads and keeps the entries of those it
    answered. Nothing a workload does switches the kernel off."""
    from enforcer.kernel.arming import KernelKiller  # noqa: PLC0415

    rules, warnings = _in_kernel_choice(args, pipeline.active)
    for w in warnings:
        print(f"enforcer: warning: {w}", file=sys.stderr)
    if not rules:
        return None
    audit = pipeline.audit

    def on_kill(rec: Any, rule: str) -> None:
        from enforcer.audit.record import ACTION, AuditRecord, new_match_id  # noqa: PLC0415
        from enforcer.kernel.kill_tables import TYPE_BITS  # noqa: PLC0415
        from enforcer.outputs.escape import escape_control  # noqa: PLC0415

        address = getattr(rec, "address", "")
        call = next((name for name, bit in TYPE_BITS.items() if bit == rec.syscall), "syscall")
        what = f"address={address}" if address else f"path={rec.path}"
        print(escape_control(f"enforcer: killed in kernel: rule={rule!r} pid={rec.tgid} "
                             f"comm={rec.comm} {what}"), file=sys.stderr, flush=True)
        detail = ({"address": address, "syscall": call} if address else {"path": rec.path})
        audit.record(AuditRecord(
            ACTION, new_match_id(), "killed-in-kernel", rule=rule, action="kill",
            target={"pid": rec.tgid, "tid": rec.tid, "comm": rec.comm}, dry_run=False,
            message=f"SIGKILL from the kernel at {'exit' if rec.at_exit else 'entry'} "
                    + (f"of the {call} to {address}" if address else
                       f"of the open of {rec.path}"),
            detail={**detail, "ret": rec.ret, "in_kernel": True}))

    responder = pipeline.responder
    killer = KernelKiller(rules, os.getpid(), on_kill, admits=responder.admits_in_kernel,
                          generation=responder.kernel_generation)
    responder.kernel_applied = lambda: killer.applied_generation
    responder.services.kernel_kills = killer.killed
    return killer


def _kernel_kill_on_reload(args: argparse.Namespace, killer: Any, then: Any) -> Any:
    """A reload that changes what the kernel kills for (a policy gone, now dry-run, a
    rule edited) switches the in-kernel kill off — it must never act on a stale policy —
    and says a restart re-arms it."""
    armed = {r.name: r.expr for r in killer.rules_selected}

    def on_rules_changed(new: Any) -> list[str]:
        gaps = list(then(new))
        rules, _ = _in_kernel_choice(args, new)
        if {r.name: r.expr for r in rules} != armed:
            killer.switch_off()
            gaps.append("the in-kernel kill is switched off (the reloaded policies or rules "
                        "change what it kills for); restart the agent to re-arm it")
        return gaps

    return on_rules_changed


def _intake_auth(config: Any) -> str:
    return "bearer token" if config.token else "client certificates"


def _reattacher(agent: Any, pipeline: Any) -> Any:
    """For hot reload: when the new rules need probes that are not attached (syscalls, or
    paths the kernel's open filter drops), attach new probes without stopping; returns the
    gaps that remain (said loudly by the pipeline)."""
    from enforcer.kernel.coverage import coverage_gaps  # noqa: PLC0415

    def on_rules_changed(new: Any) -> list[str]:
        gaps = coverage_gaps(new.engine, agent.probe_config, agent.attachment.missing)
        if not gaps:
            return []
        try:
            attachment = agent.reattach(new.engine.rules, new.engine.event_types())
        except (ProbeError, TimeoutError) as exc:
            return [*gaps, f"re-attaching the probes failed: {exc}"]
        if attachment is not None:
            pipeline.mark_attached(f"{len(attachment.syscalls)} syscalls (re-attached for "
                                   f"digest {new.short_digest})")
            print(f"enforcer: re-attached the probes for the reloaded rules: "
                  f"{len(attachment.syscalls)} syscalls ({'; '.join(gaps)})",
                  file=sys.stderr, flush=True)
        return coverage_gaps(new.engine, agent.probe_config, agent.attachment.missing)

    return on_rules_changed


def _run_falco_http(args: argparse.Namespace, pipeline: Any) -> int:
    from enforcer.cli.agent_wiring import WiringError, falco_http_config  # noqa: PLC0415
    from enforcer.sources.falco_http import IntakeConfigError, start_falco_http  # noqa: PLC0415

    try:
        config = falco_http_config(args)
    except WiringError as exc:
        pipeline.stop()
        print(exc, file=sys.stderr)
        return exc.exit_code
    acting = not args.dry_run and any(not p.dry_run for p in pipeline.active.policies.policies)
    authenticated = bool(config.token or getattr(config, "client_ca", None))  # token or mTLS
    pipeline.responder.received_alerts = True  # no notify or Event from a dry-run
    pipeline.obs.pipeline.rule_label = pipeline.rule_label  # bounded metric labels
    if not authenticated:
        # Unauthenticated intake: never acting, even if a reload later brings an acting
        # policy (anyone who can reach the port could otherwise trigger it).
        pipeline.responder.dry_run = True
    stop = _stop_on_signals(getattr(args, "stop_after", None))
    try:
        source = start_falco_http(config, pipeline.accept, acting=acting,
                                  metrics=pipeline.metrics)
    except IntakeConfigError as exc:
        pipeline.stop()
        print(f"enforcer: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        pipeline.stop()
        print(f"enforcer: cannot listen on --falco-http-addr {args.falco_http_addr}: {exc}",
              file=sys.stderr)
        return 3
    pipeline.start()
    pipeline.mark_attached("falco-http source: no probes")
    print(f"enforcer: ready: falco-http on port {source.port} (auth: "
          f"{_intake_auth(config) if authenticated else 'none, dry-run only'}); "
          f"{_mode(args, pipeline)}; policy digest {pipeline.active.short_digest}"
          f"{_endpoints(args, pipeline)}", file=sys.stderr, flush=True)
    try:
        stop.wait()
    finally:
        source.stop()
        pipeline.stop()
        sys.stderr.write(pipeline.summary())
        rejected = sum(n for code, n in source.responses.items() if code >= 400)
        sys.stderr.write(f"falco-http requests: {sum(source.responses.values())} "
                         f"({rejected} rejected)\n")
        sys.stderr.flush()
    return 0
