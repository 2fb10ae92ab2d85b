"""OpenTelemetry: one trace per detection, exported over real OTLP to a real receiver, joined
with the alert and the audit records by trace id; a dead collector costs no record."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from enforcer.audit.otel_sink import TracingAudit
from enforcer.audit.record import AuditRecord as Rec
from enforcer.audit.rotating_file import RotatingJsonl
from enforcer.audit.tracing import (
    TracingConfig,
    TracingConfigError,
    build_exporter,
    export_enabled,
    setup_tracing,
)


class JsonlSink:
    def __init__(self, path):
        self.file = RotatingJsonl(path)

    def record(self, rec: Rec) -> None:
        self.file.write(rec.as_dict())

    def close(self) -> None:
        self.file.close()


def respond_like(audit, alert, match_id="m1", fail_second=True):
    """Emit the records the responder emits for one alert matched by a two-action policy
    (the real responder drives this in test_observe_e2e)."""
    base = dict(match_id=match_id, rule=alert.rule, priority=alert.priority.display,
                trace_id=alert.trace_id, event_time_ns=alert.time_ns)
    audit.record(Rec(kind="match", outcome="matched", detail={"policies": ["contain-shell"]},
                     duration_ns=time.time_ns() - alert.time_ns, **base))
    audit.record(Rec(kind="decision", outcome="act", policy="contain-shell", dry_run=True,
                     reason="global dry-run",
                     detail={"actions": ["label_pod", "delete_pod"]}, **base))
    start = time.time_ns()
    audit.record(Rec(kind="action", outcome="dry-run", policy="contain-shell",
                     action="label_pod", index=0, dry_run=True,
                     target={"namespace": "prod", "pod": "web-7d9c-abcde"},
                     start_ns=start, duration_ns=1_500_000, **base))
    audit.record(Rec(kind="action", outcome="failed" if fail_second else "dry-run",
                     policy="contain-shell", action="delete_pod", index=1, dry_run=True,
                     target={"namespace": "prod", "pod": "web-7d9c-abcde"}, retries=2,
                     error="API server answered 503 three times" if fail_second else None,
                     start_ns=start + 2_000_000, duration_ns=3_000_000, **base))


def test_one_trace_per_detection_over_otlp_http(otlp_receiver, alert_factory, tmp_path):
    tracer = setup_tracing(
        TracingConfig(endpoint=otlp_receiver.endpoint, schedule_delay_ms=50),
        hostname="node-1", environ={"NODE_NAME": "node-1"})
    assert tracer.exporting
    audit = TracingAudit(JsonlSink(tmp_path / "audit.jsonl"), tracer)

    alert = tracer.stamp(alert_factory())  # on the detection thread
    assert alert.trace_id and len(alert.trace_id) == 32
    assert alert.falco_json()["trace_id"] == alert.trace_id  # what outputs send
    respond_like(audit, alert)

    spans = otlp_receiver.wait_for(lambda got: len(got) >= 4)
    tracer.shutdown()
    assert len(spans) == 4
    by_name: dict[str, list] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    assert sorted(by_name) == ["enforcer.action", "enforcer.decision", "enforcer.match"]
    (root,), (decision,) = by_name["enforcer.match"], by_name["enforcer.decision"]
    actions = sorted(by_name["enforcer.action"], key=lambda s: s.start_ns)

    # one trace, the alert's
    assert {s.trace_id for s in spans} == {alert.trace_id}
    # parent links: match -> decision -> each action
    assert root.parent_span_id == ""
    assert decision.parent_span_id == root.span_id
    assert [a.parent_span_id for a in actions] == [decision.span_id] * 2

    assert root.attributes["enforcer.rule"] == "Terminal shell in container"
    assert root.attributes["enforcer.priority"] == "Notice"
    assert root.attributes["enforcer.tags"] == ["container", "mitre_execution", "shell"]
    assert root.attributes["enforcer.field.k8s.pod.name"] == "web-7d9c-abcde"
    assert root.attributes["enforcer.event.time_ns"] == alert.time_ns
    assert root.start_ns == alert.time_ns  # the trace runs from the event to the last action
    assert root.end_ns >= actions[-1].end_ns
    assert root.resource["service.name"] == "enforcer"
    assert root.resource["host.name"] == "node-1"
    assert root.resource["k8s.node.name"] == "node-1"
    assert "service.version" in root.resource

    assert decision.attributes["enforcer.policy"] == "contain-shell"
    assert decision.attributes["enforcer.decision"] == "act"
    assert decision.attributes["enforcer.dry_run"] is True
    assert decision.attributes["enforcer.actions"] == ["label_pod", "delete_pod"]

    label, delete = actions
    assert label.attributes["enforcer.action"] == "label_pod"
    assert label.attributes["enforcer.outcome"] == "dry-run"
    assert label.attributes["enforcer.dry_run"] is True
    assert label.attributes["enforcer.target"] == "namespace=prod pod=web-7d9c-abcde"
    assert label.attributes["enforcer.rate_limited"] is False
    assert label.end_ns - label.start_ns == 1_500_000
    assert label.status_code == 0  # unset
    assert delete.attributes["enforcer.outcome"] == "failed"
    assert delete.attributes["enforcer.retries"] == 2
    assert delete.attributes["enforcer.error"] == "API server answered 503 three times"
    assert delete.status_code == 2  # error
    assert [name for name, _ in delete.events] == ["exception"]
    assert delete.events[0][1]["exception.message"] == "API server answered 503 three times"

    # the audit records carry the same id: alert, audit line and trace join
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert len(lines) == 4
    assert {line["trace_id"] for line in lines} == {alert.trace_id}
    assert otlp_receiver.content_types[0] == "application/x-protobuf"


def test_record_without_trace_id_gets_the_trace_id(otlp_receiver, alert_factory, tmp_path):
    """An alert that was not stamped (an embedder forgot) still yields joined records."""
    tracer = setup_tracing(TracingConfig(endpoint=otlp_receiver.endpoint,
                                         schedule_delay_ms=50), environ={})
    audit = TracingAudit(JsonlSink(tmp_path / "a.jsonl"), tracer)
    respond_like(audit, alert_factory(), fail_second=False)
    spans = otlp_receiver.wait_for(lambda got: len(got) >= 4)
    tracer.shutdown()
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len({line["trace_id"] for line in lines}) == 1
    assert {s.trace_id for s in spans} == {lines[0]["trace_id"]}


class _Refuser:
    """A collector endpoint that is down (closed port), refuses (503) or hangs."""

    def __init__(self, mode: str):
        self.mode = mode
        self.release = threading.Event()
        self.hanging = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        if mode == "down":
            self.sock.close()  # nothing listens: connection refused
            return
        self.sock.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                if self.mode == "hang":
                    self.hanging.set()
                    self.release.wait(60)
                    return
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                             b"Retry-After: 30\r\n\r\n")
            except OSError:
                pass

    def close(self) -> None:
        self.release.set()
        self.sock.close()


@pytest.mark.parametrize("mode", ["down", "refusing", "hang"])
def test_collector_trouble_loses_no_record_and_blocks_nothing(mode, alert_factory, tmp_path):
    collector = _Refuser(mode)
    n = 300
    try:
        tracer = setup_tracing(TracingConfig(
            endpoint=f"http://127.0.0.1:{collector.port}", timeout=30,
            schedule_delay_ms=10, max_queue_size=64, max_export_batch_size=8), environ={})
        audit = TracingAudit(JsonlSink(tmp_path / "audit.jsonl"), tracer)
        if mode == "hang":
            # make sure the exporter is stuck in a request before the decisions start
            respond_like(audit, tracer.stamp(alert_factory()), match_id="warmup")
            assert collector.hanging.wait(30)
        alerts = []
        for i in range(n):
            alert = tracer.stamp(alert_factory(rule=f"rule {i % 7}"))
            alerts.append(alert)
            respond_like(audit, alert, match_id=f"m{i}")
        # Every decision is on disk while the collector is still down / refusing / hung.
        lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        extra = 4 if mode == "hang" else 0
        assert len(lines) == 4 * n + extra
        decisions = [line for line in lines if line["kind"] == "decision"
                     and line["match_id"] != "warmup"]
        assert len(decisions) == n
        assert [d["trace_id"] for d in decisions] == [a.trace_id for a in alerts]
        if mode == "hang":
            assert not collector.release.is_set()
        assert audit.flush(timeout=60)
        assert audit.span_errors == 0
        # stopping is bounded even with a hung collector
        tracer.shutdown(timeout_s=1)
    finally:
        collector.close()


def test_rotation_keeps_every_record(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = RotatingJsonl(path, max_bytes=2000)
    for i in range(500):
        log.write({"kind": "action", "n": i, "pad": "x" * (i % 50)})
    log.close()
    files = RotatingJsonl(path, max_bytes=2000).files()
    assert len(files) > 10
    numbers = [json.loads(line)["n"] for f in files for line in f.read_text().splitlines()]
    assert numbers == list(range(500))  # nothing dropped, nothing split, in order
    assert all(f.stat().st_size <= 2000 for f in files)


def test_rotation_writes_an_oversized_record_alone(tmp_path):
    log = RotatingJsonl(tmp_path / "a.jsonl", max_bytes=100)
    log.write({"n": 1})
    log.write({"big": "y" * 500})
    log.write({"n": 2})
    files = log.files()
    log.close()
    contents = [f.read_text().splitlines() for f in files]
    assert [len(c) for c in contents] == [1, 1, 1]


@pytest.mark.parametrize(("config", "env", "expect"), [
    (TracingConfig(), {}, False),
    (TracingConfig(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
    (TracingConfig(), {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
    (TracingConfig(endpoint="http://c:4318"), {"OTEL_TRACES_EXPORTER": "none"}, False),
    (TracingConfig(exporter="otlp"), {}, True),
    (TracingConfig(exporter="none", endpoint="http://c:4318"), {}, False),
])
def test_export_enabled(config, env, expect):
    assert export_enabled(config, env) is expect


def test_protocol_chosen_by_env_and_config():
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as Grpc,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as Http,
    )
    assert isinstance(build_exporter(TracingConfig(endpoint="http://c:4318"), {}), Http)
    assert isinstance(build_exporter(TracingConfig(endpoint="http://c:4317"),
                                     {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}), Grpc)
    assert isinstance(build_exporter(TracingConfig(endpoint="http://c:4318"),
                                     {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                      "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}),
                      Http)
    assert isinstance(build_exporter(TracingConfig(protocol="grpc", endpoint="http://c:4317"),
                                     {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}), Grpc)
    with pytest.raises(TracingConfigError, match="http/json"):
        build_exporter(TracingConfig(protocol="http/json"), {})


def test_otel_env_overrides_resource_and_disables():
    tracer = setup_tracing(environ={"OTEL_SERVICE_NAME": "enforcer-canary"})
    assert tracer.provider is not None
    assert tracer.provider.resource.attributes["service.name"] == "enforcer-canary"
    assert setup_tracing(environ={"OTEL_SDK_DISABLED": "true"}).enabled is False


def test_export_over_grpc_to_a_real_grpc_receiver(alert_factory, tmp_path):
    from tests.receivers import grpc_collector

    with grpc_collector() as receiver:
        tracer = setup_tracing(TracingConfig(protocol="grpc", insecure=True,
                                             endpoint=receiver.endpoint,
                                             schedule_delay_ms=50), environ={})
        audit = TracingAudit(JsonlSink(tmp_path / "a.jsonl"), tracer)
        alert = tracer.stamp(alert_factory())
        respond_like(audit, alert)
        got = receiver.wait_for(lambda spans: len(spans) >= 4)
        tracer.shutdown()
        assert {s.trace_id for s in got} == {alert.trace_id}
        assert sorted(s.name for s in got) == ["enforcer.action", "enforcer.action",
                                               "enforcer.decision", "enforcer.match"]
        assert set(receiver.content_types) == {"grpc"}


def test_sdk_export_errors_are_logged_once_a_minute():
    import logging

    from enforcer.audit.tracing import _OncePerInterval

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("enforcer.test.quiet")
    quiet, keep = _OncePerInterval(interval_s=3600), Keep()
    logger.addFilter(quiet)
    logger.addHandler(keep)
    try:
        for i in range(500):
            logger.warning("Queue full, dropping %s.", "span")
            logger.warning("Transient error %s, retrying in %.2fs.", "refused", i / 10)
        assert seen == ["Queue full, dropping span.",
                        "Transient error refused, retrying in 0.00s."]
    finally:
        logger.removeFilter(quiet)
        logger.removeHandler(keep)


def test_a_background_upload_is_its_own_span_and_the_trace_waits_for_it(
        otlp_receiver, alert_factory, tmp_path):
    """A snapshot whose upload runs in the background (`pending`), then a kill: the trace
    stays open after the kill and ends with the upload's own span, under the policy."""
    tracer = setup_tracing(TracingConfig(endpoint=otlp_receiver.endpoint,
                                         schedule_delay_ms=50), environ={})
    audit = TracingAudit(JsonlSink(tmp_path / "audit.jsonl"), tracer)
    alert = tracer.stamp(alert_factory())
    base = dict(match_id="m1", rule=alert.rule, priority=alert.priority.display,
                trace_id=alert.trace_id, event_time_ns=alert.time_ns, policy="evidence")
    audit.record(Rec(kind="match", outcome="matched", detail={"policies": ["evidence"]},
                     **{k: v for k, v in base.items() if k != "policy"}))
    audit.record(Rec(kind="decision", outcome="act", dry_run=False,
                     detail={"actions": ["snapshot", "kill"]}, **base))
    start = time.time_ns()
    path = "/var/lib/enforcer/snapshots/s.tar.gz"
    audit.record(Rec(kind="action", outcome="done", action="snapshot", index=0,
                     dry_run=False, pending="snapshot.upload", start_ns=start,
                     duration_ns=2_000_000, detail={"path": path}, **base))
    audit.record(Rec(kind="action", outcome="done", action="kill", index=1, dry_run=False,
                     start_ns=start + 2_000_000, duration_ns=300_000, **base))
    assert audit.flush() and tracer.flush()
    # both actions are exported; the policy's and the match's spans are still open
    spans = otlp_receiver.wait_for(lambda got: len(got) >= 2)
    assert sorted(s.attributes["enforcer.action"] for s in spans) == ["kill", "snapshot"]
    audit.record(Rec(kind="action", outcome="failed", action="snapshot.upload", index=0,
                     dry_run=False, start_ns=start + 2_100_000, duration_ns=30_000_000,
                     error=f"snapshot written to {path} but its upload failed: 503",
                     detail={"path": path}, retries=2, **base))
    spans = otlp_receiver.wait_for(lambda got: len(got) >= 5)
    tracer.shutdown()
    by_name: dict[str, list] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    (root,), (decision,) = by_name["enforcer.match"], by_name["enforcer.decision"]
    upload = next(s for s in by_name["enforcer.action"]
                  if s.attributes["enforcer.action"] == "snapshot.upload")
    assert {s.trace_id for s in spans} == {alert.trace_id}
    assert upload.parent_span_id == decision.span_id
    assert upload.attributes["enforcer.outcome"] == "failed"
    assert upload.status_code == 2
    assert root.end_ns >= upload.end_ns == start + 32_100_000
