"""OpenTelemetry traces of every detection and what was done about it.

One trace per detection:

    enforcer.match                 rule, priority, tags, source, event time, key fields
      └─ enforcer.decision         one per matching policy: policy, decision, dry_run, ...
           └─ enforcer.action      one per action: action, target, dry_run, outcome,
                                   rate_limited, guard, retries, error (+ exception event)

The trace id goes into the alert (`Alert.trace_id`, hence its Falco JSON) and into every
audit record of the detection, so a SIEM line, an audit line and a trace join on one id.

Spans are exported by a BatchSpanProcessor: ending a span only enqueues it, and when the
collector is slow or down the bounded queue drops spans, never the caller's time. The JSONL
audit log, written before the span is made, stays the durable record.

Export is configured by the standard OTEL_* environment variables (OTEL_TRACES_EXPORTER,
OTEL_EXPORTER_OTLP[_TRACES]_{PROTOCOL,ENDPOINT,HEADERS,TIMEOUT,INSECURE}, OTEL_BSP_*,
OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_SDK_DISABLED) and by TracingConfig, which
wins where both say something.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from enforcer import __version__
from enforcer.alert import Alert

log = logging.getLogger(__name__)

INSTRUMENTATION = "enforcer.audit"
PROTOCOLS = ("grpc", "http/protobuf")

# The output fields worth a span attribute: who did it, where, to what. All of them are in
# the alert and the audit record anyway.
KEY_FIELDS = (
    "evt.type", "proc.name", "proc.pid", "proc.exepath", "proc.cmdline", "proc.pname",
    "user.name", "user.uid", "fd.name", "container.id", "container.name",
    "container.image.repository", "k8s.ns.name", "k8s.pod.name",
)
FAILED_OUTCOMES = frozenset({"failed", "error"})


class TracingConfigError(ValueError):
    """Tracing cannot be set up as configured; the message says what to change."""


@dataclass(frozen=True)
class TracingConfig:
    """What the agent's config and flags say; None means "ask the OTEL_* variables"."""

    exporter: str | None = None   # "otlp" or "none"; None: OTEL_TRACES_EXPORTER, else otlp
                                  # when an endpoint is configured, else none
    protocol: str | None = None   # "grpc" or "http/protobuf"
    endpoint: str | None = None   # base URL (http: /v1/traces is appended when no path)
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None  # seconds per export
    insecure: bool | None = None  # gRPC without TLS
    max_queue_size: int | None = None
    max_export_batch_size: int | None = None
    schedule_delay_ms: float | None = None
    export_timeout_ms: float | None = None


def _env(environ: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def resolve_protocol(config: TracingConfig, environ: Mapping[str, str]) -> str:
    """Config, else OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL,
    else the specification's default, http/protobuf."""
    protocol = (config.protocol or _env(environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                                        "OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    protocol = protocol.lower()
    if protocol not in PROTOCOLS:
        raise TracingConfigError(f"OTLP protocol {protocol!r} is not supported; use one of "
                                 f"{', '.join(PROTOCOLS)}")
    return protocol


def export_enabled(config: TracingConfig, environ: Mapping[str, str]) -> bool:
    """Whether spans leave the process. Without any endpoint configured we still make
    traces (their ids join alert and audit) but do not knock on localhost:4318 forever."""
    choice = config.exporter or _env(environ, "OTEL_TRACES_EXPORTER")
    if choice is not None:
        names = {c.strip().lower() for c in choice.split(",")}
        unknown = names - {"otlp", "none"}
        if unknown:
            raise TracingConfigError(f"trace exporter {sorted(unknown)} is not supported; "
                                     "use otlp or none")
        return "otlp" in names
    return bool(config.endpoint or _env(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                                        "OTEL_EXPORTER_OTLP_ENDPOINT"))


def _http_endpoint(base: str) -> str:
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TracingConfigError(f"OTLP endpoint {base!r} must be an http:// or https:// URL")
    if parts.path in ("", "/"):
        return base.rstrip("/") + "/v1/traces"
    return base


def build_exporter(config: TracingConfig, environ: Mapping[str, str]) -> SpanExporter:
    """The OTLP span exporter the configuration asks for."""
    protocol = resolve_protocol(config, environ)
    headers = dict(config.headers) or None
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )
        return GrpcExporter(endpoint=config.endpoint, insecure=config.insecure,
                            headers=headers, timeout=config.timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )
    endpoint = _http_endpoint(config.endpoint) if config.endpoint else None
    return HttpExporter(endpoint=endpoint, headers=headers, timeout=config.timeout)


def build_resource(hostname: str | None = None,
                   environ: Mapping[str, str] | None = None) -> Resource:
    """service.name=enforcer, service.version, host.name, k8s.node.name (from NODE_NAME);
    OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override these."""
    environ = os.environ if environ is None else environ
    attributes: dict[str, Any] = {
        "service.name": "enforcer",
        "service.version": __version__,
        "host.name": hostname or socket.gethostname(),
    }
    node = environ.get("NODE_NAME", "").strip()
    if node:
        attributes["k8s.node.name"] = node
    # The operator's OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win over ours.
    for item in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    service = environ.get("OTEL_SERVICE_NAME", "").strip()
    if service:
        attributes["service.name"] = service
    return Resource.create(attributes)


def _attr(value: Any) -> Any:
    """A span attribute value: str/bool/int/float, or a homogeneous list of those."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        items = [v for v in value if v is not None]
        if items and all(isinstance(v, str) for v in items):
            return list(items)
        return [str(v) for v in items]
    return str(value)


class DetectionTrace:
    """The trace of one detection. Made by `Tracer.begin`; call `decision` per matching
    policy, `action` per action (children of their decision), and `end` when done. Safe to
    use from the responder's thread after detection made it."""

    def __init__(self, root: Span | None, alert: Alert | None,
                 tracer: trace.Tracer | None = None):
        self._root = root
        self._tracer = tracer or trace.NoOpTracer()
        self._lock = threading.Lock()
        self._ended = False
        self.trace_id: str | None = None
        self.span_id: str | None = None
        if root is not None:
            ctx = root.get_span_context()
            self.trace_id = trace.format_trace_id(ctx.trace_id)
            self.span_id = trace.format_span_id(ctx.span_id)
        # The alert as outputs and policies should see it: carrying the trace id.
        if alert is not None and self.trace_id is not None and alert.trace_id != self.trace_id:
            alert = _with_trace_id(alert, self.trace_id)
        self.alert = alert

    @property
    def ids(self) -> dict[str, str]:
        """{"trace_id", "span_id"} of the root span, to put into audit records."""
        if self.trace_id is None or self.span_id is None:
            return {}
        return {"trace_id": self.trace_id, "span_id": self.span_id}

    def decision(self, policy: str, decision: str, *, dry_run: bool,
                 actions: Sequence[str] = (), rate_limited: bool = False,
                 reason: str = "", start_ns: int | None = None, end_ns: int | None = None,
                 attributes: Mapping[str, Any] | None = None) -> DecisionSpan:
        """Record that `policy` matched and what was decided (`act`, `dry_run`,
        `rate_limited`, `suppressed`, …). Returns a handle for that decision's actions."""
        if self._root is None:
            return DecisionSpan(None, self._tracer)
        attrs: dict[str, Any] = {
            "enforcer.policy": policy,
            "enforcer.decision": decision,
            "enforcer.dry_run": dry_run,
            "enforcer.rate_limited": rate_limited,
            "enforcer.actions": list(actions),
        }
        if reason:
            attrs["enforcer.reason"] = reason
        for key, value in (attributes or {}).items():
            attrs[key] = _attr(value)
        span = self._tracer.start_span("enforcer.decision",
                                       trace.set_span_in_context(self._root),
                                       kind=SpanKind.INTERNAL, attributes=attrs,
                                       start_time=start_ns)
        handle = DecisionSpan(span, self._tracer)
        if end_ns is not None:
            handle.end(end_ns)
        return handle

    def set_attribute(self, key: str, value: Any) -> None:
        """An attribute on the root span (e.g. the policy digest that decided)."""
        if self._root is not None:
            self._root.set_attribute(key, _attr(value))

    def add_event(self, name: str, attributes: Mapping[str, Any]) -> None:
        if self._root is not None:
            self._root.add_event(name, {k: _attr(v) for k, v in attributes.items()})

    def end(self, matched_policies: int | None = None, end_ns: int | None = None) -> None:
        """End the detection's trace (idempotent)."""
        with self._lock:
            if self._ended or self._root is None:
                self._ended = True
                return
            self._ended = True
        if matched_policies is not None:
            self._root.set_attribute("enforcer.policies_matched", matched_policies)
        self._root.end(end_ns)


class DecisionSpan:
    """One policy's decision; its actions become its children."""

    def __init__(self, span: Span | None, tracer: trace.Tracer):
        self._span = span
        self._tracer = tracer
        self._ended = False
        self._lock = threading.Lock()
        self.span_id = (trace.format_span_id(span.get_span_context().span_id)
                        if span is not None else None)

    def set_attribute(self, key: str, value: Any) -> None:
        if self._span is not None:
            self._span.set_attribute(key, _attr(value))

    def action(self, action: str, *, target: str, dry_run: bool, outcome: str,
               rate_limited: bool = False, guard: str | None = None, retries: int = 0,
               error: BaseException | str | None = None, start_ns: int | None = None,
               end_ns: int | None = None,
               attributes: Mapping[str, Any] | None = None) -> str | None:
        """Record one action that ran (or was refused). Returns the action span's id, for
        the audit record. Times default to now (a zero-length span)."""
        if self._span is None:
            return None
        attrs: dict[str, Any] = {
            "enforcer.action": action,
            "enforcer.target": target,
            "enforcer.dry_run": dry_run,
            "enforcer.outcome": outcome,
            "enforcer.rate_limited": rate_limited,
            "enforcer.retries": retries,
        }
        if guard:
            attrs["enforcer.guard"] = guard
        if error is not None:
            attrs["enforcer.error"] = str(error)
        for key, value in (attributes or {}).items():
            attrs[key] = _attr(value)
        start = start_ns if start_ns is not None else time.time_ns()
        span = self._tracer.start_span("enforcer.action", trace.set_span_in_context(self._span),
                                       kind=SpanKind.INTERNAL, attributes=attrs,
                                       start_time=start)
        if isinstance(error, BaseException):
            span.record_exception(error, timestamp=end_ns)
        if error is not None or outcome in FAILED_OUTCOMES:
            span.set_status(Status(StatusCode.ERROR, str(error) if error else outcome))
        span.end(end_ns if end_ns is not None else max(start, time.time_ns()))
        return trace.format_span_id(span.get_span_context().span_id)

    def end(self, end_ns: int | None = None) -> None:
        with self._lock:
            if self._ended or self._span is None:
                self._ended = True
                return
            self._ended = True
        self._span.end(end_ns)


def _with_trace_id(alert: Alert, trace_id: str) -> Alert:
    return dataclasses.replace(alert, trace_id=trace_id)


def _alert_attributes(alert: Alert) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "enforcer.rule": alert.rule,
        "enforcer.priority": alert.priority.display,
        "enforcer.tags": sorted(alert.tags),
        "enforcer.source": alert.source,
        "enforcer.hostname": alert.hostname,
        "enforcer.event.time": alert.time_iso,
        "enforcer.event.time_ns": alert.time_ns,
        "enforcer.output": alert.output,
    }
    for name in KEY_FIELDS:
        value = alert.output_fields.get(name)
        if value is not None:
            attrs[f"enforcer.field.{name}"] = _attr(value)
    return attrs


# The trace id a root span must take: the one already stamped on the alert. The SDK asks
# its IdGenerator for a trace id when a span has no parent; this one answers with the preset
# id of the current context when there is one.
_PRESET_TRACE_ID: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "enforcer_preset_trace_id", default=None)


class _PresetIdGenerator(RandomIdGenerator):
    def random_trace_id(self) -> int:
        return super().generate_trace_id()

    def generate_trace_id(self) -> int:
        preset = _PRESET_TRACE_ID.get()
        return preset if preset else super().generate_trace_id()


class Tracer:
    """The agent's tracing: owns a TracerProvider (not the global one, so tests and the
    agent never fight over it) and starts one trace per detection."""

    def __init__(self, provider: TracerProvider | None, exporting: bool = False,
                 remember: int = 4096):
        self.provider = provider
        self.exporting = exporting
        self._ids = _PresetIdGenerator()
        if provider is not None:
            provider.id_generator = self._ids
        self._lock = threading.Lock()
        # Stamped alerts awaiting their trace (bounded: most alerts match no policy).
        self._alerts: OrderedDict[str, Alert] = OrderedDict()
        self._remember = remember
        self._tracer = (provider.get_tracer(INSTRUMENTATION, __version__)
                        if provider is not None else None)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def new_trace_id(self) -> str | None:
        """A fresh random trace id (32 hex digits), or None when tracing is off."""
        if self._tracer is None:
            return None
        return trace.format_trace_id(self._ids.random_trace_id())

    def stamp(self, alert: Alert) -> Alert:
        """On the detection thread: give the alert its trace id (so outputs, the responder
        and the audit log all carry it) and remember the alert for the trace's root span."""
        if self._tracer is None or alert.trace_id is not None:
            return alert
        trace_id = self.new_trace_id()
        assert trace_id is not None
        stamped = _with_trace_id(alert, trace_id)
        with self._lock:
            self._alerts[trace_id] = stamped
            while len(self._alerts) > self._remember:
                self._alerts.popitem(last=False)
        return stamped

    def begin(self, alert: Alert, *, start_ns: int | None = None) -> DetectionTrace:
        """Start the trace of one detection: the root `enforcer.match` span. Uses the
        alert's trace id when it has one (see `stamp`)."""
        if self._tracer is None:
            return DetectionTrace(None, alert)
        with self._lock:
            self._alerts.pop(alert.trace_id or "", None)
        return self._start_root(_alert_attributes(alert), alert.trace_id, start_ns, alert)

    def begin_record(self, *, rule: str, priority: str, trace_id: str | None,
                     start_ns: int | None, attributes: Mapping[str, Any]) -> DetectionTrace:
        """Start a detection's trace from an audit record: the stamped alert is used for the
        root's attributes when still remembered, else the record's rule and priority."""
        alert = None
        if trace_id:
            with self._lock:
                alert = self._alerts.pop(trace_id, None)
        attrs: dict[str, Any] = ({"enforcer.rule": rule, "enforcer.priority": priority}
                                 if alert is None else _alert_attributes(alert))
        attrs.update({k: _attr(v) for k, v in attributes.items()})
        if self._tracer is None:
            return DetectionTrace(None, alert)
        return self._start_root(attrs, trace_id, start_ns, alert)

    def _start_root(self, attrs: dict[str, Any], trace_id: str | None, start_ns: int | None,
                    alert: Alert | None) -> DetectionTrace:
        assert self._tracer is not None
        token = _PRESET_TRACE_ID.set(int(trace_id, 16) if trace_id else None)
        try:
            # An empty Context: each detection starts its own trace, whatever is current.
            root = self._tracer.start_span("enforcer.match", Context(), kind=SpanKind.INTERNAL,
                                           attributes=attrs, start_time=start_ns)
        finally:
            _PRESET_TRACE_ID.reset(token)
        return DetectionTrace(root, alert, self._tracer)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Export what is queued, waiting at most `timeout_s`; True if it all went out."""
        if self.provider is None:
            return True
        return self._bounded(self.provider.force_flush, timeout_s, "otel-flush")

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush what can be flushed within `timeout_s`, then stop exporting."""
        if self.provider is None:
            return
        provider = self.provider

        def flush_then_stop() -> bool:
            provider.force_flush()
            provider.shutdown()
            return True

        self._bounded(flush_then_stop, timeout_s, "otel-shutdown")

    @staticmethod
    def _bounded(fn: Any, timeout_s: float, name: str) -> bool:
        # The SDK's force_flush ignores its timeout and exports synchronously, retrying a
        # dead collector with backoff; run it off-thread so the agent's stop stays bounded.
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        threading.Thread(target=run, name=name, daemon=True).start()
        return done.wait(timeout_s)


# The SDK logs every failed export and every span it drops: with a dead collector and a busy
# node that is a line per span. One line per kind of message a minute says the same.
_SDK_LOGGERS = ("opentelemetry.sdk._shared_internal",
                "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                "opentelemetry.exporter.otlp.proto.grpc.exporter")


class _OncePerInterval(logging.Filter):
    """Passes the first record of each message template per interval, then counts the rest
    and says how many were held back when it passes the next one."""

    def __init__(self, interval_s: float = 60.0):
        super().__init__()
        self.interval_ns = int(interval_s * 1e9)
        self._seen: dict[tuple[str, str], tuple[int, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic_ns()
        with self._lock:
            last, held = self._seen.get(key, (0, 0))
            if last and now - last < self.interval_ns:
                self._seen[key] = (last, held + 1)
                return False
            self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} [{held} similar message(s) in the last minute not shown]"
        return True


_QUIETER = _OncePerInterval()


def _quiet_sdk_logs() -> None:
    for name in _SDK_LOGGERS:
        logger = logging.getLogger(name)
        if _QUIETER not in logger.filters:
            logger.addFilter(_QUIETER)


def setup_tracing(config: TracingConfig | None = None, *, hostname: str | None = None,
                  environ: Mapping[str, str] | None = None,
                  extra_processors: Iterable[Any] = ()) -> Tracer:
    """Build the agent's Tracer from config and OTEL_* variables.

    Raises TracingConfigError for a configuration that cannot work (the CLI exits 2).
    `extra_processors` are added as given (tests use an in-memory one).
    """
    config = config or TracingConfig()
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Tracer(None)
    provider = TracerProvider(resource=build_resource(hostname, environ))
    exporting = export_enabled(config, environ)
    if exporting:
        exporter = build_exporter(config, environ)
        batch = config.max_export_batch_size
        if batch is None and config.max_queue_size is not None:
            # A small queue asked for without a batch size: batches cannot exceed it.
            default = int(_env(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or 512)
            batch = min(default, config.max_queue_size)
        try:
            processor = BatchSpanProcessor(
                exporter,
                max_queue_size=config.max_queue_size,
                schedule_delay_millis=config.schedule_delay_ms,
                max_export_batch_size=batch,
                export_timeout_millis=config.export_timeout_ms,
            )
        except ValueError as exc:
            raise TracingConfigError(f"span export queue: {exc}") from None
        provider.add_span_processor(processor)
        _quiet_sdk_logs()
        log.info("tracing: exporting spans over OTLP %s", resolve_protocol(config, environ))
    for processor in extra_processors:
        provider.add_span_processor(processor)
        _quiet_sdk_logs()
    return Tracer(provider, exporting)
