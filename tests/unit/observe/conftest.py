"""Fixtures for the observability tests: a real OTLP/HTTP trace receiver, HTTP servers that
answer, fail or hang on demand, and helpers to build alerts."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from enforcer.alert import Alert
from enforcer.priority import Priority
from tests.conftest import require


@dataclass
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int
    events: list[tuple[str, dict[str, Any]]]
    start_ns: int
    end_ns: int


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _open_event() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


@dataclass
class OtlpReceiver:
    """A local OTLP/HTTP collector: decodes ExportTraceServiceRequest protobufs."""

    port: int = 0
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    content_types: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    # Cleared: requests are held (the collector hangs) until it is set again.
    gate: threading.Event = field(default_factory=_open_event)
    held: int = 0  # requests that arrived while the gate was closed

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        got = []
        for rs in request.resource_spans:
            resource = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(ReceivedSpan(
                        trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(), name=s.name,
                        attributes=_attrs(s.attributes), resource=resource,
                        status_code=s.status.code,
                        events=[(e.name, _attrs(e.attributes)) for e in s.events],
                        start_ns=s.start_time_unix_nano, end_ns=s.end_time_unix_nano))
        with self.arrived:
            self.requests += 1
            self.spans.extend(got)
            self.arrived.notify_all()

    def hold(self) -> None:
        """Hang: hold every request from now on, unanswered, until `release()`."""
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def wait_held(self, timeout: float = 30.0) -> None:
        """Wait until a request is being held (the exporter is stuck in it)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not self.held:
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail("OTLP receiver: no request arrived to be held")
                self.arrived.wait(left)

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool],
                 timeout: float = 30.0) -> list[ReceivedSpan]:
        """Wait until the received spans satisfy `predicate` (fails the test otherwise)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not predicate(self.spans):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"OTLP receiver: condition not met; got {len(self.spans)} "
                                f"span(s): {[s.name for s in self.spans]}")
                self.arrived.wait(left)
            return list(self.spans)


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    # imported here: tests.receivers builds on the classes of this module
    from tests.receivers import otlp_collector  # noqa: PLC0415

    with otlp_collector() as receiver:
        yield receiver


@dataclass
class Recorder:
    """A local HTTP server that records requests and answers with scripted codes; when
    `hang` is set it holds requests open until `release` is set."""

    port: int = 0
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)  # answers to give, in order; then 200
    hang: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    hanging: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def wait(self, predicate: Callable[[Recorder], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"HTTP recorder: condition not met ({len(self.bodies)} "
                                "requests)")
                self.cond.wait(left)


@pytest.fixture
def http_recorder() -> Iterator[Recorder]:
    from tests.receivers import webhook_recorder  # noqa: PLC0415

    with webhook_recorder() as rec:
        yield rec


def make_alert(rule: str = "Terminal shell in container",
               priority: Priority = Priority.NOTICE, **fields: Any) -> Alert:
    output_fields = {"proc.name": "bash", "proc.pid": 4242, "container.id": "1e579f838ea3",
                     "k8s.ns.name": "prod", "k8s.pod.name": "web-7d9c-abcde",
                     "evt.type": "execve"}
    output_fields.update(fields)
    return Alert(rule=rule, priority=priority,
                 output="A shell was spawned in a container with an attached terminal",
                 output_fields=output_fields, time_ns=time.time_ns(),
                 tags=("container", "shell", "mitre_execution"), hostname="node-1",
                 event=dict(output_fields))


@pytest.fixture
def alert_factory() -> Callable[..., Alert]:
    return make_alert


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl."""
    require(shutil.which("openssl") is not None, "openssl is not installed",
            "apt-get install openssl")
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client", "intruder", "stranger"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    for name in ("server", "client", "intruder"):  # intruder: signed by our CA, not allowed
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", "san.ext", cwd=d)
    # a client certificate from another CA: must be refused
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other-ca.key",
             "-out", "other-ca.pem", "-days", "2", "-subj", "/CN=other-ca", cwd=d)
    _openssl("x509", "-req", "-in", "stranger.csr", "-CA", "other-ca.pem", "-CAkey",
             "other-ca.key", "-CAcreateserial", "-out", "stranger.pem", "-days", "2", cwd=d)
    return d
