"""Options for outputs, tracing, metrics and the falco-http input, shared by the commands
that run the agent, and the one object they build from them.

    observe_args.add_arguments(parser)
    obs = observe_args.from_args(args, hostname=..., base_outputs=[StreamOutput(...), ...])
    responder = responder_from_args(args, audit=obs.audit_sink(args.audit_log),
                                    on_critical=obs.pipeline.emit, hostname=...)
    obs.attach_responder(responder)     # policies loaded: /readyz condition set
    obs.start()                         # /metrics /healthz /readyz, output workers
    ... Agent(engine, [obs.pipeline], ...) ...; obs.readiness.set(PROBES_ATTACHED)
    responder.stop(); obs.close(); print(obs.summary(responder))

Environment variables mirror the flags (ENFORCER_*), and the standard OTEL_* variables
configure OpenTelemetry export; a --config file sets the same options, plus a list of
webhooks and the tracing settings that have no flag (see enforcer.cli.config_args).
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from enforcer.alert_pipeline import AlertPipeline
from enforcer.audit.metrics_sink import MetricsAudit
from enforcer.audit.otel_sink import TracingAudit
from enforcer.audit.record import FanOut
from enforcer.audit.response_summary import format_response_summary
from enforcer.audit.rotating_file import DEFAULT_MAX_BYTES, FsyncPolicy, RotatingJsonlAudit
from enforcer.audit.tracing import Tracer, TracingConfig, TracingConfigError, setup_tracing
from enforcer.health import POLICIES_LOADED, Readiness
from enforcer.http_server import DEFAULT_HTTP_ADDR, HttpServer, parse_addr
from enforcer.metrics import Metrics
from enforcer.outputs.dispatcher import DEFAULT_QUEUE_SIZE, Dispatcher, OutputSpec
from enforcer.outputs.extra_fields import parse_extra_fields
from enforcer.outputs.formats import FALCO_DEFAULT_SHAPE
from enforcer.outputs.program import ProgramConfig, ProgramOutput, parse_argv
from enforcer.outputs.syslog import DEFAULT_SOCKET as SYSLOG_SOCKET
from enforcer.outputs.webhook import WebhookConfig, WebhookOutput, header_dict
from enforcer.priority import Priority
from enforcer.sources.falco_http import DEFAULT_ADDR as FALCO_HTTP_ADDR
from enforcer.sources.falco_http import DEFAULT_CLIENT_RATE, DEFAULT_MAX_BODY, FalcoHttpConfig
from enforcer.units import duration_argument, size_argument

SOURCES = ("ebpf", "falco-http")


class ObserveConfigError(Exception):
    """An output, tracing or intake option is wrong; the message says which and how."""


def _priority(text: str) -> Priority:
    try:
        return Priority.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_list(name: str, sep: str = ",") -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(sep) if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the outputs / observability / falco-http option groups to `parser`."""
    out = parser.add_argument_group("alert outputs")
    out.add_argument("--extra-field", action="append", metavar="KEY=VALUE",
                     default=_env_list("ENFORCER_EXTRA_FIELDS"),
                     help="add a static field to every alert's output_fields, like Falco's "
                          "append_output and Falcosidekick's customfields (repeatable; env "
                          "ENFORCER_EXTRA_FIELDS, comma-separated)")
    out.add_argument("--output-min-priority", type=_priority, metavar="PRIORITY",
                     default=_priority(_env("ENFORCER_OUTPUT_MIN_PRIORITY", "debug") or ""),
                     help="minimum priority for stdout and --output-file (default debug)")
    out.add_argument("--output-queue-size", type=int, metavar="N",
                     default=int(_env("ENFORCER_OUTPUT_QUEUE_SIZE", str(DEFAULT_QUEUE_SIZE))
                                 or DEFAULT_QUEUE_SIZE),
                     help="alerts each output may hold before dropping new ones (counted); "
                          f"default {DEFAULT_QUEUE_SIZE}")
    out.add_argument("--webhook-url", "--webhook", metavar="URL",
                     default=_env("ENFORCER_WEBHOOK_URL"),
                     help="POST each alert as Falco JSON to this URL (Falcosidekick: "
                          "http://falcosidekick:2801/)")
    out.add_argument("--webhook-header", action="append", metavar="'NAME: VALUE'",
                     default=_env_list("ENFORCER_WEBHOOK_HEADERS", "\n"),
                     help="extra request header, e.g. 'Authorization: Bearer TOKEN' "
                          "(repeatable; env ENFORCER_WEBHOOK_HEADERS, one per line)")
    out.add_argument("--webhook-timeout", type=duration_argument, metavar="DURATION",
                     default=duration_argument(_env("ENFORCER_WEBHOOK_TIMEOUT", "5") or "5"),
                     help="per request: seconds, or 500ms, 10s (default 5)")
    out.add_argument("--webhook-retries", type=int, metavar="N",
                     default=int(_env("ENFORCER_WEBHOOK_RETRIES", "3") or 3),
                     help="retries after a timeout, refused connection, 429 or 5xx")
    out.add_argument("--webhook-min-priority", type=_priority, metavar="PRIORITY",
                     default=_priority(_env("ENFORCER_WEBHOOK_MIN_PRIORITY", "debug") or ""))
    out.add_argument("--webhook-ca-file", metavar="FILE", default=_env("ENFORCER_WEBHOOK_CA"))
    out.add_argument("--program-output", metavar="ARGV", default=_env("ENFORCER_PROGRAM_OUTPUT"),
                     help="run this command (a JSON array, or words; never a shell) and "
                          "write each alert's JSON to its stdin")
    out.add_argument("--program-keep-alive", action="store_true",
                     default=_env("ENFORCER_PROGRAM_KEEP_ALIVE", "") in ("1", "true"),
                     help="keep one program running and write one alert per line")
    out.add_argument("--syslog-output", action="store_true",
                     default=_env("ENFORCER_SYSLOG_OUTPUT", "") in ("1", "true"),
                     help="also send each alert to the local syslog socket, as Falco's "
                          "syslog_output (env ENFORCER_SYSLOG_OUTPUT)")
    out.add_argument("--syslog-socket", metavar="PATH",
                     default=_env("ENFORCER_SYSLOG_SOCKET", SYSLOG_SOCKET),
                     help=f"the syslog socket (env ENFORCER_SYSLOG_SOCKET; default "
                          f"{SYSLOG_SOCKET})")
    out.add_argument("--program-min-priority", type=_priority, metavar="PRIORITY",
                     default=_priority(_env("ENFORCER_PROGRAM_MIN_PRIORITY", "debug") or ""))

    obs = parser.add_argument_group("metrics, health and tracing")
    obs.add_argument("--http-addr", metavar="HOST:PORT",
                     default=_env("ENFORCER_HTTP_ADDR", DEFAULT_HTTP_ADDR),
                     help="serve /metrics, /healthz and /readyz here ('off' to disable; "
                          f"default {DEFAULT_HTTP_ADDR})")
    obs.add_argument("--otlp-endpoint", metavar="URL", default=None,
                     help="export traces over OTLP to this collector (default: "
                          "OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT; none: no export)")
    obs.add_argument("--otlp-protocol", choices=("grpc", "http/protobuf"), default=None,
                     help="default: OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL, else http/protobuf")
    obs.add_argument("--otlp-header", action="append", metavar="KEY=VALUE", default=[],
                     help="header sent to the collector (repeatable; OTEL_EXPORTER_OTLP_"
                          "HEADERS works too)")
    obs.add_argument("--otlp-insecure", action="store_true", default=None,
                     help="gRPC without TLS")
    obs.add_argument("--otlp-max-queue-size", type=int, metavar="N", default=None,
                     help="spans held for export before new ones are dropped (the audit log "
                          "keeps everything); default OTEL_BSP_MAX_QUEUE_SIZE or 2048")
    obs.add_argument("--otlp-max-export-batch-size", type=int, metavar="N", default=None)
    obs.add_argument("--otlp-schedule-delay-ms", type=float, metavar="MS", default=None)
    obs.add_argument("--audit-max-bytes", type=size_argument, metavar="SIZE",
                     default=size_argument(_env("ENFORCER_AUDIT_MAX_BYTES", "100Mi") or "100Mi"),
                     help="rotate the audit log at this size; rotated files are kept "
                          "(default 100Mi; K/M/G are powers of 1000, Ki/Mi/Gi of 1024; env "
                          "ENFORCER_AUDIT_MAX_BYTES)")
    obs.add_argument("--audit-fsync", metavar="POLICY",
                     default=_env("ENFORCER_AUDIT_FSYNC", "never"),
                     help="force audit records to disk: never (the kernel writes them back; "
                          "default), always (each record), or a duration such as 1s")
    obs.add_argument("--audit-unready-on-failure", action="store_true",
                     default=(_env("ENFORCER_AUDIT_UNREADY_ON_FAILURE", "") or "").lower()
                     in ("1", "true", "yes"),
                     help="make /readyz fail while audit records cannot be written (default: "
                          "a warning in /readyz and enforcer_audit_* metrics)")

    src = parser.add_argument_group("falco-http input (--source falco-http)")
    src.add_argument("--source", choices=SOURCES, default=_env("ENFORCER_SOURCE", "ebpf"),
                     help="where alerts come from: this host's kernel (ebpf), or a Falco "
                          "that POSTs its alerts (falco-http)")
    src.add_argument("--falco-http-addr", metavar="HOST:PORT",
                     default=_env("ENFORCER_FALCO_HTTP_ADDR", FALCO_HTTP_ADDR),
                     help=f"listen here for Falco's http_output (default {FALCO_HTTP_ADDR})")
    src.add_argument("--falco-http-token-file", metavar="FILE",
                     default=_env("ENFORCER_FALCO_HTTP_TOKEN_FILE"),
                     help="shared secret expected as 'Authorization: Bearer TOKEN' (or env "
                          "ENFORCER_FALCO_HTTP_TOKEN); required unless everything is dry-run")
    src.add_argument("--falco-http-tls-cert", metavar="PEM",
                     default=_env("ENFORCER_FALCO_HTTP_TLS_CERT"),
                     help="serve the input over HTTPS with this certificate chain")
    src.add_argument("--falco-http-tls-key", metavar="PEM",
                     default=_env("ENFORCER_FALCO_HTTP_TLS_KEY"),
                     help="the certificate's private key (default: in --falco-http-tls-cert)")
    src.add_argument("--falco-http-client-ca", metavar="PEM",
                     default=_env("ENFORCER_FALCO_HTTP_CLIENT_CA"),
                     help="require client certificates signed by this CA (mutual TLS; "
                          "Falco's http_output mtls)")
    src.add_argument("--falco-http-max-body", type=size_argument, metavar="SIZE",
                     default=DEFAULT_MAX_BODY, help="larger bodies get 413 (default 1Mi)")
    src.add_argument("--falco-http-client-name", action="append", metavar="NAME",
                     default=_env_list("ENFORCER_FALCO_HTTP_CLIENT_NAMES"),
                     help="with --falco-http-client-ca: accept only client certificates "
                          "whose subject CN or a SAN is NAME (repeatable; env "
                          "ENFORCER_FALCO_HTTP_CLIENT_NAMES, comma-separated)")
    src.add_argument("--falco-http-client-rate", type=float, metavar="N",
                     default=float(_env("ENFORCER_FALCO_HTTP_CLIENT_RATE")
                                   or DEFAULT_CLIENT_RATE),
                     help="requests per second one client address may send, with 5 s of "
                          f"burst; more get 429 (default {DEFAULT_CLIENT_RATE:g}, 0: no "
                          "limit)")


def tracing_config(args: argparse.Namespace) -> TracingConfig:
    headers: dict[str, str] = {}
    for item in getattr(args, "otlp_header", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ObserveConfigError(f"--otlp-header {item!r} is not KEY=VALUE")
        headers[key.strip()] = value.strip()
    return TracingConfig(
        exporter=getattr(args, "otlp_exporter", None),
        timeout=getattr(args, "otlp_timeout", None),
        export_timeout_ms=getattr(args, "otlp_export_timeout_ms", None),
        endpoint=getattr(args, "otlp_endpoint", None),
        protocol=getattr(args, "otlp_protocol", None), headers=headers,
        insecure=getattr(args, "otlp_insecure", None),
        max_queue_size=getattr(args, "otlp_max_queue_size", None),
        max_export_batch_size=getattr(args, "otlp_max_export_batch_size", None),
        schedule_delay_ms=getattr(args, "otlp_schedule_delay_ms", None))


def falco_http_config(args: argparse.Namespace) -> FalcoHttpConfig:
    """The intake's settings; the token is read from its file or ENFORCER_FALCO_HTTP_TOKEN
    (never from the command line, where `ps` would show it)."""
    token = _env("ENFORCER_FALCO_HTTP_TOKEN")
    path = getattr(args, "falco_http_token_file", None)
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise ObserveConfigError(f"cannot read --falco-http-token-file {path}: "
                                     f"{exc.strerror}") from None
    try:
        parse_addr(args.falco_http_addr)
    except ValueError as exc:
        raise ObserveConfigError(f"--falco-http-addr: {exc}") from None
    return FalcoHttpConfig(addr=args.falco_http_addr, token=token,
                           max_body=args.falco_http_max_body,
                           tls_cert=getattr(args, "falco_http_tls_cert", None),
                           tls_key=getattr(args, "falco_http_tls_key", None),
                           client_ca=getattr(args, "falco_http_client_ca", None),
                           client_names=tuple(getattr(args, "falco_http_client_name", None)
                                              or ()),
                           client_rate=getattr(args, "falco_http_client_rate",
                                               DEFAULT_CLIENT_RATE),
                           node_name=getattr(args, "node_name", None) or "")


def _outputs(args: argparse.Namespace, base_outputs: list[Any]) -> list[OutputSpec]:
    size = args.output_queue_size
    if size < 1:
        raise ObserveConfigError("--output-queue-size must be at least 1")
    specs: list[OutputSpec] = []
    shape = getattr(args, "alert_shape", None) or FALCO_DEFAULT_SHAPE
    for i, output in enumerate(base_outputs):
        name = getattr(output, "name", None) or ("stdout" if i == 0 else f"file{i}")
        specs.append(OutputSpec(output, args.output_min_priority, size, name=name))
    try:
        for i, (config, minimum) in enumerate(_webhooks(args)):
            name = "webhook" if i == 0 else f"webhook{i + 1}"
            specs.append(OutputSpec(WebhookOutput(config, name=name, shape=shape), minimum, size,
                                    name=name))
        if args.program_output:
            program = ProgramConfig(parse_argv(args.program_output),
                                    keep_alive=args.program_keep_alive)
            specs.append(OutputSpec(ProgramOutput(program, shape=shape),
                                    args.program_min_priority, size))
    except ValueError as exc:
        raise ObserveConfigError(str(exc)) from None
    return specs


def _webhooks(args: argparse.Namespace) -> list[tuple[WebhookConfig, Priority]]:
    """The webhook of --webhook-url (it replaces a config file's list), else the config
    file's `outputs.webhooks`. Raises ValueError."""
    if args.webhook_url:
        config = WebhookConfig(args.webhook_url, header_dict(args.webhook_header or []),
                               timeout=args.webhook_timeout, max_retries=args.webhook_retries,
                               ca_file=args.webhook_ca_file)
        return [(config, args.webhook_min_priority)]
    from enforcer.units import parse_duration  # noqa: PLC0415

    out = []
    for item in getattr(args, "webhooks", None) or []:
        config = WebhookConfig(item["url"], dict(item.get("headers") or {}),
                               timeout=parse_duration(item.get("timeout", 5)),
                               max_retries=int(item.get("retries", 3)),
                               ca_file=item.get("ca_file"))
        out.append((config, Priority.parse(item.get("min_priority", "debug"))))
    return out


@dataclass
class Observability:
    """Metrics, readiness, tracing, outputs and the alert pipeline of one agent."""

    metrics: Metrics
    readiness: Readiness
    tracer: Tracer
    dispatcher: Dispatcher
    pipeline: AlertPipeline
    http_addr: str | None
    audit_max_bytes: int = DEFAULT_MAX_BYTES
    audit_fsync: FsyncPolicy = field(default_factory=FsyncPolicy)
    audit_unready_on_failure: bool = False
    http: HttpServer | None = None
    audits: list[Any] = field(default_factory=list)

    def audit_sink(self, path: str) -> Any:
        """The responder's audit sink: the rotated JSONL log (durable, first), metrics from
        the same records, then spans. `path` '-' writes JSONL to stderr, unrotated."""
        if path == "-":
            from enforcer.audit.jsonl import JsonlAudit  # noqa: PLC0415
            jsonl: Any = JsonlAudit("-")
        else:
            jsonl = RotatingJsonlAudit(path, max_bytes=self.audit_max_bytes,
                                       fsync=self.audit_fsync)
            self.metrics.registry.register(jsonl.collector())
            if self.audit_unready_on_failure:
                self.readiness.require("audit", jsonl.problem)
            else:
                self.readiness.watch("audit", jsonl.problem)
        sink = TracingAudit(FanOut(jsonl, MetricsAudit(self.metrics)), self.tracer)
        self.audits.append(sink)
        return sink

    def attach_responder(self, responder: Any) -> None:
        """Give alerts to `responder`; its policies are loaded, so say so in /readyz."""
        self.pipeline.responder = responder
        policies = getattr(responder, "policies", None)
        count = len(getattr(policies, "policies", []) or [])
        # enforcer_policy_reloads_total counts hot reloads (from the reloader's audit
        # records), not this first load: readiness says that one.
        self.readiness.set(POLICIES_LOADED, True, f"{count} policies")

    def start(self) -> Observability:
        """Start the output workers and the metrics/health server (OSError if the address
        cannot be bound)."""
        self._watch_losses()
        self.dispatcher.start()
        if self.http_addr:
            from enforcer.http_server import start_http_server  # noqa: PLC0415
            self.http = start_http_server(self.http_addr, self.metrics, self.readiness)
        return self

    def _watch_losses(self) -> None:
        # Acting blind must be visible: /readyz says so (without failing the probe, since a
        # restart would not bring the events back), next to the counters in /metrics.
        metrics = self.metrics

        def kernel() -> str | None:
            n = metrics.kernel_drops()
            return f"{n} events dropped by the kernel since start" if n else None

        def responder() -> str | None:
            n = metrics.registry.get_sample_value("enforcer_responder_drops_total") or 0
            return (f"{int(n)} matches not answered: the responder queue was full"
                    if n else None)

        def outputs() -> str | None:
            drops = {name: s.dropped for name, s in self.dispatcher.stats().items()
                     if s.dropped}
            return ("alerts dropped by slow outputs: " + ", ".join(
                f"{k} {v}" for k, v in sorted(drops.items()))) if drops else None

        self.readiness.watch("kernel_drops", kernel)
        self.readiness.watch("responder_drops", responder)
        self.readiness.watch("output_drops", outputs)

    def close(self, timeout: float = 5.0) -> None:
        """After the responder stopped: end open traces, close the audit log, flush
        outputs and spans (each bounded by `timeout`), stop the server."""
        for sink in self.audits:
            sink.close()
        self.pipeline.close(timeout)
        self.tracer.shutdown(timeout)
        if self.http is not None:
            self.http.stop()

    def summary(self, responder: Any = None) -> str:
        """Falco's alert summary, then the responses block and output drops."""
        text = self.pipeline.stats.format()
        if responder is not None:
            text += format_response_summary(responder.stats())
        drops = {n: s.dropped for n, s in self.dispatcher.stats().items() if s.dropped}
        if drops:
            text += "Alerts dropped by slow outputs: " + ", ".join(
                f"{n}: {d}" for n, d in sorted(drops.items())) + "\n"
        return text


def from_args(args: argparse.Namespace, *, hostname: str | None = None,
              base_outputs: list[Any] | None = None,
              readiness: Readiness | None = None) -> Observability:
    """Build (not start) everything from the parsed options. Raises ObserveConfigError."""
    hostname = hostname or socket.gethostname()
    try:
        extra = parse_extra_fields(args.extra_field or [])
    except ValueError as exc:
        raise ObserveConfigError(str(exc)) from None
    http_addr = None if str(args.http_addr).lower() in ("off", "none", "") else args.http_addr
    if http_addr:
        try:
            parse_addr(http_addr)
        except ValueError as exc:
            raise ObserveConfigError(f"--http-addr: {exc}") from None
    try:
        tracer = setup_tracing(tracing_config(args), hostname=hostname)
    except TracingConfigError as exc:
        raise ObserveConfigError(str(exc)) from None
    metrics = Metrics()
    dispatcher = Dispatcher(_outputs(args, list(base_outputs or [])), extra, metrics)
    pipeline = AlertPipeline(dispatcher, tracer, metrics)
    try:
        fsync = FsyncPolicy.parse(getattr(args, "audit_fsync", None))
    except ValueError as exc:
        raise ObserveConfigError(f"--audit-fsync: {exc}") from None
    return Observability(metrics, readiness or Readiness(), tracer, dispatcher, pipeline,
                         http_addr, getattr(args, "audit_max_bytes", DEFAULT_MAX_BYTES),
                         fsync, bool(getattr(args, "audit_unready_on_failure", False)))
