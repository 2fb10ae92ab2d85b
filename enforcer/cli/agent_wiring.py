"""Build the live agent's Pipeline from its command-line options (see enforcer.pipeline).

Every problem is a `WiringError` carrying the exit code and a message saying what to do:
2 for a usage mistake (bad address, header, program, token missing), 1 for rules or
policies that do not load (each problem as FILE:LINE:COL), 3 for the environment (audit
log or store not writable, port in use).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from enforcer.errors import EnforcerError


class WiringError(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _token(path: str | None, env: str, what: str) -> str | None:
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as exc:
            raise WiringError(f"cannot read the {what} token file {path}: {exc.strerror}",
                              2) from None
        if not token:
            raise WiringError(f"the {what} token file {path} is empty", 2)
        return token
    return os.environ.get(env, "").strip() or None


def policy_paths(args: argparse.Namespace) -> list[str]:
    from enforcer.resources import default_responses_dir  # noqa: PLC0415

    return list(args.policies or [str(default_responses_dir())])


def enabled_actions(args: argparse.Namespace) -> set[str] | None:
    from enforcer.gitops.deployment import DeploymentError  # noqa: PLC0415
    from enforcer.gitops.deployment import enabled_actions as resolve  # noqa: PLC0415

    try:
        return resolve(enabled=args.enabled_actions)
    except DeploymentError as exc:
        raise WiringError(str(exc), 2) from None


def load_reloader(args: argparse.Namespace, hostname: str) -> Any:
    """The Reloader with its initial set loaded (WiringError 1/2 when it does not load)."""
    from enforcer.cli.rules_args import missing_paths, rules_paths  # noqa: PLC0415
    from enforcer.gitops.bundle import BundleError  # noqa: PLC0415
    from enforcer.reload import Reloader  # noqa: PLC0415

    rules, policies = rules_paths(args), policy_paths(args)
    missing = missing_paths(rules + policies)
    if missing:
        raise WiringError("\n".join(f"enforcer: no such file or directory: {p}"
                                    for p in missing), 2)
    try:
        return Reloader(rules, policies, enabled_actions=enabled_actions(args),
                        hostname=hostname, interval=args.reload_interval)
    except BundleError as exc:
        raise WiringError(str(exc), 1) from None


def build_outputs(args: argparse.Namespace, stdout: TextIO, metrics: Any) -> Any:
    """The dispatcher with stdout, --output-file, --webhook and --program-output."""
    from enforcer.outputs.dispatcher import Dispatcher, OutputSpec  # noqa: PLC0415
    from enforcer.outputs.extra_fields import parse_extra_fields  # noqa: PLC0415
    from enforcer.outputs.program import ProgramConfig, ProgramOutput, parse_argv  # noqa: PLC0415
    from enforcer.outputs.webhook import (  # noqa: PLC0415
        WebhookConfig,
        WebhookOutput,
        parse_header,
    )
    from enforcer.pipeline import LineOutput  # noqa: PLC0415
    from enforcer.priority import Priority  # noqa: PLC0415

    specs = [OutputSpec(LineOutput("stdout", stdout, args.format),
                        min_priority=args.min_priority)]
    if args.output_file:
        try:
            handle = open(args.output_file, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise WiringError(f"enforcer: cannot open --output-file {args.output_file}: "
                              f"{exc.strerror}", 2) from None
        specs.append(OutputSpec(LineOutput("file", handle, args.format, owned=True),
                                min_priority=args.min_priority))
    try:
        headers = dict(parse_header(h) for h in args.webhook_header or [])
        for i, item in enumerate(args.webhook or []):
            url, _, opts = item.partition(",")
            minimum = Priority.DEBUG
            if opts:
                key, _, value = opts.partition("=")
                if key.strip() != "min":
                    raise ValueError(f"--webhook {item!r}: the only option is ',min=PRIORITY'")
                minimum = Priority.parse(value)
            name = "webhook" if i == 0 else f"webhook{i + 1}"
            specs.append(OutputSpec(WebhookOutput(WebhookConfig(url, headers=headers), name),
                                    min_priority=minimum))
        for i, text in enumerate(args.program_output or []):
            name = "program" if i == 0 else f"program{i + 1}"
            specs.append(OutputSpec(ProgramOutput(ProgramConfig(parse_argv(text)), name),
                                    min_priority=args.program_min_priority))
        extra = parse_extra_fields(args.extra_field or [])
    except ValueError as exc:
        raise WiringError(f"enforcer: {exc}", 2) from None
    return Dispatcher(specs, extra_fields=extra, metrics=metrics)


def build_tracer(args: argparse.Namespace, hostname: str) -> Any:
    from enforcer.audit.tracing import (  # noqa: PLC0415
        TracingConfig,
        TracingConfigError,
        setup_tracing,
    )

    try:
        return setup_tracing(TracingConfig(endpoint=args.otel_endpoint,
                                           protocol=args.otel_protocol), hostname=hostname)
    except TracingConfigError as exc:
        raise WiringError(f"enforcer: tracing: {exc}", 2) from None


def build_store(args: argparse.Namespace) -> Any:
    from enforcer.store.schema import StoreError, default_store_path  # noqa: PLC0415
    from enforcer.store.writer import StoreWriter  # noqa: PLC0415

    path = args.store or (default_store_path() if args.ui else None)
    if path is None:
        return None
    try:
        return StoreWriter(path)
    except (StoreError, OSError) as exc:
        raise WiringError(f"enforcer: cannot open the audit store {path}: {exc}; choose "
                          "another with --store (or ENFORCER_STORE)", 3) from None


def build_pipeline(args: argparse.Namespace, *, stdout: TextIO | None = None,
                   stderr: TextIO | None = None) -> Any:
    """Everything after detection, from the options. Nothing listens or runs yet except
    the store's writer thread: call `start_http` and `Pipeline.start()`."""
    from enforcer.health import Readiness  # noqa: PLC0415
    from enforcer.metrics import Metrics  # noqa: PLC0415
    from enforcer.pipeline import Pipeline, RotatingAudit, audit_chain, hostname  # noqa: PLC0415
    from enforcer.respond.options import responder_from_args  # noqa: PLC0415

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    host = hostname()
    metrics = Metrics()
    reloader = load_reloader(args, host)
    tracer = build_tracer(args, host)
    dispatcher = build_outputs(args, stdout, metrics)
    if args.audit_log == "-":
        from enforcer.audit.jsonl import JsonlAudit  # noqa: PLC0415
        jsonl: Any = JsonlAudit("-")
    else:
        try:
            jsonl = RotatingAudit(args.audit_log, max(1, args.audit_max_bytes))
        except OSError as exc:
            raise WiringError(
                f"enforcer: cannot open the audit log {args.audit_log}: {exc.strerror}; run "
                "as root or choose another file with --audit-log (or ENFORCER_AUDIT_LOG)",
                3) from None
    store = build_store(args)
    audit = audit_chain(jsonl, tracer, metrics, store)
    bundle = reloader.current
    try:
        responder = responder_from_args(args, policies=bundle.policies, hostname=host,
                                        audit=audit)
    except EnforcerError as exc:
        raise WiringError(f"enforcer: {exc}", getattr(exc, "exit_code", 1)) from None
    responder.use_policies(bundle.policies, bundle.short_digest)
    pipeline = Pipeline(reloader=reloader, responder=responder, dispatcher=dispatcher,
                        metrics=metrics, readiness=Readiness(), tracer=tracer, audit=audit,
                        store=store, stderr=stderr)
    responder.on_critical = pipeline.critical
    reloader.on_swap = pipeline.swap
    reloader.on_critical = pipeline.critical
    reloader.on_loaded = metrics.policies_loaded
    reloader.audit = audit
    metrics.policies_loaded(True)
    return pipeline


def start_http(args: argparse.Namespace, pipeline: Any) -> None:
    """Bind /metrics, /healthz, /readyz (and /ui) on --http-addr, unless it is 'off'."""
    from enforcer.http_server import parse_addr, start_http_server  # noqa: PLC0415

    if args.http_addr.lower() in ("off", "none", ""):
        if args.ui:
            raise WiringError("enforcer: --ui needs the HTTP server; give --http-addr", 2)
        return
    try:
        host, _ = parse_addr(args.http_addr)
    except ValueError as exc:
        raise WiringError(f"enforcer: --http-addr: {exc}", 2) from None
    ui = None
    if args.ui:
        from enforcer.console.access import check_exposure  # noqa: PLC0415
        from enforcer.console.app import ConsoleApp  # noqa: PLC0415

        token = _token(args.ui_token_file, "ENFORCER_UI_TOKEN", "console")
        try:
            check_exposure(host, token)
        except ValueError as exc:
            raise WiringError(f"enforcer: {exc}", 2) from None
        ui = ConsoleApp(pipeline.store.path, token=token)
    try:
        pipeline.http = start_http_server(args.http_addr, pipeline.metrics, pipeline.readiness,
                                          ui)
    except OSError as exc:
        raise WiringError(f"enforcer: cannot listen on --http-addr {args.http_addr}: "
                          f"{exc.strerror or exc}; choose another (or ENFORCER_HTTP_ADDR)",
                          3) from None


def falco_http_token(args: argparse.Namespace) -> str | None:
    return _token(args.falco_http_token_file, "ENFORCER_FALCO_HTTP_TOKEN", "falco-http")
