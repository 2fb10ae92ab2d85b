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
            raise WiringError(f"enforcer: cannot read the {what} token file {path}: "
                              f"{exc.strerror}", 2) from None
        if not token:
            raise WiringError(f"enforcer: the {what} token file {path} is empty", 2)
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
        raise WiringError(f"enforcer: {exc}", 2) from None


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
                        hostname=hostname, interval=args.reload_interval,
                        build_engine=engine_builder(args, hostname))
    except BundleError as exc:
        raise WiringError(str(exc), 1) from None


def engine_builder(args: argparse.Namespace, hostname: str) -> Any:
    """Engine(ruleset) with the rule selection and engine options of the command line
    (--min-priority, --enable/--disable-rule/-tag, --rule-matching, --append-output), the
    same for the first set and every reloaded one."""
    from enforcer.cli.selection_args import (  # noqa: PLC0415
        engine_options_from_args,
        select_rules,
    )
    from enforcer.errors import RuleError  # noqa: PLC0415
    from enforcer.rules.engine import Engine  # noqa: PLC0415

    try:
        options = engine_options_from_args(args)
    except RuleError as exc:
        raise WiringError("\n".join(str(d) for d in exc.diagnostics)
                          + "\nenforcer: invalid --append-output file; fix the problems above",
                          1) from None

    def build(ruleset: Any) -> Any:
        return Engine(select_rules(ruleset, args), hostname=hostname, **options)

    return build


def build_store(args: argparse.Namespace) -> Any:
    from enforcer.store.postgres.dsn import is_postgres  # noqa: PLC0415
    from enforcer.store.schema import StoreError, default_store_path  # noqa: PLC0415

    if is_postgres(args.store):
        return _postgres_store(args)
    from enforcer.store.writer import StoreWriter  # noqa: PLC0415

    path = args.store or (default_store_path() if args.ui else None)
    if path is None:
        return None
    try:
        return StoreWriter(path)
    except (StoreError, OSError) as exc:
        raise WiringError(f"enforcer: cannot open the audit store {path}: {exc}; choose "
                          "another with --store (or ENFORCER_STORE)", 3) from None


def _syslog(args: argparse.Namespace, stderr: TextIO) -> list[Any]:
    """The syslog output, or none (with a warning) when the socket is not there: Falco's
    shipped falco.yaml enables it, and a node or container without a syslog daemon must
    still start."""
    from enforcer.outputs.syslog import SyslogOutput  # noqa: PLC0415

    try:
        from enforcer.outputs.formats import FALCO_DEFAULT_SHAPE  # noqa: PLC0415

        return [SyslogOutput(args.syslog_socket, args.format,
                             shape=getattr(args, "alert_shape", None) or FALCO_DEFAULT_SHAPE)]
    except OSError as exc:
        stderr.write(f"enforcer: warning: syslog output is off: cannot connect to "
                     f"{args.syslog_socket}: {exc.strerror or exc} (--syslog-socket)\n")
        return []


def _postgres_store(args: argparse.Namespace) -> Any:
    """The writer to the cluster's PostgreSQL store (psycopg imported only now)."""
    from enforcer.pipeline import hostname  # noqa: PLC0415
    from enforcer.store.postgres.dsn import DsnError, with_password  # noqa: PLC0415

    try:
        dsn = with_password(args.store, getattr(args, "store_password_file", None))
    except DsnError as exc:
        raise WiringError(f"enforcer: {exc}", 2) from None
    try:
        import psycopg  # noqa: F401, PLC0415

        from enforcer.store.postgres.writer import (  # noqa: PLC0415
            PgStoreWriter,
            StoreUnavailable,
        )
    except ImportError as exc:
        raise WiringError(f"enforcer: --store postgresql://… needs psycopg ({exc}); install "
                          "enforcer[postgresql]", 3) from None
    try:
        return PgStoreWriter(dsn, args.node_name or hostname(), args.store_spool)
    except StoreUnavailable as exc:
        raise WiringError(f"enforcer: cannot use the audit store {exc}", 3) from None
    except OSError as exc:
        raise WiringError(f"enforcer: cannot open the store spool {args.store_spool}: "
                          f"{exc}; choose another with --store-spool", 3) from None


def build_pipeline(args: argparse.Namespace, *, stdout: TextIO | None = None,
                   stderr: TextIO | None = None) -> Any:
    """Everything after detection, from the options. Nothing listens or runs yet except
    the store's writer thread: call `start_http` and `Pipeline.start()`."""
    from enforcer.cli.observe_args import ObserveConfigError, from_args  # noqa: PLC0415
    from enforcer.pipeline import LineOutput, Pipeline, audit_chain, hostname  # noqa: PLC0415
    from enforcer.respond.options import deprecation_warnings, responder_from_args  # noqa: PLC0415

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    host = hostname()
    reloader = load_reloader(args, host)
    shape = getattr(args, "alert_shape", None)
    base = ([LineOutput("stdout", stdout, args.format, shape=shape)]
            if getattr(args, "stdout_enabled", True) else [])
    if args.output_file:
        try:
            handle = open(args.output_file, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise WiringError(f"enforcer: cannot open --output-file {args.output_file}: "
                              f"{exc.strerror}", 2) from None
        base.append(LineOutput("file", handle, args.format, owned=True, shape=shape))
    if getattr(args, "syslog_output", False):
        base.extend(_syslog(args, stderr))
    try:
        obs = from_args(args, hostname=host, base_outputs=base)
    except ObserveConfigError as exc:
        raise WiringError(f"enforcer: {exc}", 2) from None
    obs.http_addr = None  # start_http serves it, with the console under /ui when asked
    try:
        obs_sink = obs.audit_sink(args.audit_log)
    except OSError as exc:
        raise WiringError(
            f"enforcer: cannot open the audit log {args.audit_log}: {exc.strerror}; run as "
            "root or choose another file with --audit-log (or ENFORCER_AUDIT_LOG)", 3) from None
    store = build_store(args)
    if store is not None:
        from enforcer.store.store_metrics import StoreCollector  # noqa: PLC0415

        obs.metrics.registry.register(StoreCollector(store))
    audit = audit_chain(obs_sink, store)
    bundle = reloader.current
    for warning in deprecation_warnings(args):
        print(f"enforcer: warning: {warning}", file=sys.stderr)
    try:
        responder = responder_from_args(args, policies=bundle.policies, hostname=host,
                                        audit=audit, serve_control=True)
    except EnforcerError as exc:
        raise WiringError(f"enforcer: {exc}", getattr(exc, "exit_code", 1)) from None
    responder.use_policies(bundle.policies, bundle.short_digest)
    events = None
    if str(getattr(args, "kubernetes_events", "false")).lower() == "true":
        from enforcer.respond.kube_events import KubeEvents  # noqa: PLC0415

        events = KubeEvents(lambda: responder.services.kube, audit=audit,
                            node_name=responder.node_name, hostname=host,
                            metrics=obs.metrics)
        responder.on_outcome = events.submit
    pipeline = Pipeline(reloader=reloader, responder=responder, obs=obs, audit=audit,
                        store=store, stderr=stderr, events=events)
    responder.on_critical = pipeline.critical
    reloader.on_swap = pipeline.swap
    reloader.on_critical = pipeline.critical
    # (the reload audit records feed enforcer_policy_reloads_total, through MetricsAudit)
    reloader.audit = audit
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
        ui = ConsoleApp(getattr(pipeline.store, "dsn", None) or pipeline.store.path,
                        token=token)
    context = None
    if getattr(args, "http_tls_pem", None):
        from enforcer.http_server import tls_context  # noqa: PLC0415

        try:
            context = tls_context(args.http_tls_pem)
        except ValueError as exc:
            raise WiringError(f"enforcer: webserver.ssl_certificate: {exc}", 2) from None
    try:
        pipeline.obs.http = start_http_server(args.http_addr, pipeline.metrics,
                                              pipeline.readiness, ui,
                                              health_path=getattr(args, "health_path", None),
                                              ssl_context=context)
    except OSError as exc:
        raise WiringError(f"enforcer: cannot listen on --http-addr {args.http_addr}: "
                          f"{exc.strerror or exc}; choose another (or ENFORCER_HTTP_ADDR)",
                          3) from None


def falco_http_config(args: argparse.Namespace) -> Any:
    from enforcer.cli.observe_args import ObserveConfigError  # noqa: PLC0415
    from enforcer.cli.observe_args import falco_http_config as config  # noqa: PLC0415

    try:
        return config(args)
    except ObserveConfigError as exc:
        raise WiringError(f"enforcer: {exc}", 2) from None
