"""The falco-http input: Falco's http_output / Falcosidekick webhook JSON -> Alert."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from pathlib import Path

import pytest

from enforcer.metrics import Metrics
from enforcer.priority import Priority
from enforcer.sources.falco_http import (
    MAX_TRACKED_CLIENTS,
    AlertPayloadError,
    ClientRate,
    FalcoHttpConfig,
    IntakeConfigError,
    certificate_names,
    check_intake_auth,
    parse_falco_alert,
    start_falco_http,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "falco-alerts"
TERMINAL_SHELL = (DATA / "terminal_shell_k8s.json").read_bytes()
NODE = "falco-7xk2p"  # the alert's hostname: the node its Falco runs on


def test_real_falco_payload_becomes_an_alert():
    alert = parse_falco_alert(TERMINAL_SHELL)
    assert alert.rule == "Terminal shell in container"
    assert alert.priority is Priority.NOTICE
    assert alert.source == "syscall"
    assert alert.hostname == "falco-7xk2p"
    assert alert.tags == ("T1059", "container", "maturity_stable", "mitre_execution", "shell")
    assert alert.time_ns == 1711393792621653995  # `time`, to the nanosecond
    assert alert.output.startswith("A shell was spawned in a container with an attached")
    assert alert.event.get("k8s.pod.name") == "web-55696bc998-9j9zk"
    assert alert.event.get("k8s.ns.name") == "prod"
    assert alert.event.get("proc.tty") == 34816
    assert alert.event.get("proc.pid") is None  # absent: missing, never guessed
    # Re-emitted as Falco JSON, it says what Falco said.
    doc = alert.falco_json()
    original = json.loads(TERMINAL_SHELL)
    for key in ("rule", "priority", "time", "output", "hostname", "source", "output_fields"):
        assert doc[key] == original[key], key


def test_falcosidekick_payload_with_uuid_and_nulls():
    body = json.dumps({
        "uuid": "6c4d7a0e-3b7e-4f6b-9a55-0e6d1f0f2c11", "output": "x", "priority": "Critical",
        "rule": "Read sensitive file untrusted", "time": "2024-01-02T03:04:05.5Z",
        "output_fields": {"proc.pname": None, "fd.name": "/etc/shadow"}, "source": "syscall",
        "tags": ["filesystem"], "hostname": "node-a"}).encode()
    alert = parse_falco_alert(body)
    assert alert.priority is Priority.CRITICAL
    assert alert.time_ns % 1_000_000_000 == 500_000_000
    assert alert.event.get("proc.pname") is None
    assert alert.event.get("fd.name") == "/etc/shadow"


@pytest.mark.parametrize(("body", "why"), [
    (b"{not json", "not JSON"),
    (b"[]", "JSON object"),
    (b'{"priority": "Notice"}', "'rule'"),
    (b'{"rule": "r"}', "'priority'"),
    (b'{"rule": "r", "priority": "Loud"}', "Invalid priority"),
    (b'{"rule": "r", "priority": "Notice", "output_fields": []}', "output_fields"),
    (b'{"rule": "r", "priority": "Notice", "tags": "a"}', "tags"),
    (b'{"rule": "r", "priority": "Notice", "time": "yesterday"}', "RFC 3339"),
    (b"\xff\xfe", "UTF-8|JSON"),
    (b"19:09:52.621653995: Notice text output", "json_output"),
])
def test_bad_payloads_are_explained(body, why):
    with pytest.raises(AlertPayloadError, match=why):
        parse_falco_alert(body)


def test_intake_refuses_to_act_without_a_token():
    with pytest.raises(IntakeConfigError, match="refusing to start"):
        check_intake_auth(FalcoHttpConfig(), acting=True)
    check_intake_auth(FalcoHttpConfig(), acting=False)
    check_intake_auth(FalcoHttpConfig(token="t0ken"), acting=True)
    with pytest.raises(IntakeConfigError, match="empty"):
        check_intake_auth(FalcoHttpConfig(token="  "), acting=True)
    with pytest.raises(IntakeConfigError):
        start_falco_http(FalcoHttpConfig(addr="127.0.0.1:0"), lambda a: None, acting=True)


def _request(port: int, method: str, path: str = "/", body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
        return response.status, (json.loads(raw) if raw else {})
    finally:
        conn.close()


@pytest.fixture
def intake():
    received = []
    metrics = Metrics()
    source = start_falco_http(
        FalcoHttpConfig(addr="127.0.0.1:0", token="s3cret", max_body=16 * 1024,
                        node_name=NODE),
        received.append, acting=True, metrics=metrics)
    yield source, received, metrics
    source.stop()


AUTH = {"Authorization": "Bearer s3cret", "Content-Type": "application/json"}


def test_intake_end_to_end_codes_and_counts(intake):
    source, received, metrics = intake
    port = source.port
    assert _request(port, "POST", body=TERMINAL_SHELL, headers=AUTH)[0] == 200
    assert _request(port, "POST", body=b"{oops", headers=AUTH)[0] == 400
    assert _request(port, "POST", body=b"x" * (64 * 1024), headers=AUTH)[0] == 413
    assert _request(port, "GET", headers=AUTH)[0] == 405
    assert _request(port, "POST", body=TERMINAL_SHELL)[0] == 401
    wrong = dict(AUTH, Authorization="Bearer nope")
    assert _request(port, "POST", body=TERMINAL_SHELL, headers=wrong)[0] == 401
    assert _request(port, "POST", "/other", body=TERMINAL_SHELL, headers=AUTH)[0] == 404
    # After all that, the input is undisturbed.
    status, doc = _request(port, "POST", body=TERMINAL_SHELL, headers=AUTH)
    assert (status, doc["message"]) == (200, "accepted")

    assert [a.rule for a in received] == ["Terminal shell in container"] * 2
    assert received[0].event.get("k8s.pod.name") == "web-55696bc998-9j9zk"
    assert dict(source.responses) == {200: 2, 400: 1, 413: 1, 405: 1, 401: 2, 404: 1}
    for code, n in source.responses.items():
        assert metrics.registry.get_sample_value(
            "enforcer_falco_http_requests_total", {"code": str(code)}) == n


def test_oversized_body_is_refused_before_it_is_sent(intake):
    """With Expect: 100-continue, a client learns 413 without uploading the body."""
    source, received, _ = intake
    sock = socket.create_connection(("127.0.0.1", source.port), timeout=10)
    try:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
                     b"Content-Length: 99999999\r\nExpect: 100-continue\r\n\r\n")
        head = sock.recv(4096)
    finally:
        sock.close()
    assert head.startswith(b"HTTP/1.1 413")
    assert received == []


def test_chunked_body_is_refused_with_411(intake):
    source, _, _ = intake
    sock = socket.create_connection(("127.0.0.1", source.port), timeout=10)
    try:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        head = sock.recv(4096)
    finally:
        sock.close()
    assert head.startswith(b"HTTP/1.1 411")


def test_responder_refusal_is_a_503():
    def refuse(alert):
        raise RuntimeError("queue full")

    source = start_falco_http(FalcoHttpConfig(addr="127.0.0.1:0", node_name=NODE), refuse,
                              acting=False)
    try:
        assert _request(source.port, "POST", body=TERMINAL_SHELL)[0] == 503
        assert source.responses[503] == 1
    finally:
        source.stop()


def _https_post(port: int, pki: Path, client: str | None) -> int:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if client:
        context.load_cert_chain(str(pki / f"{client}.pem"), str(pki / f"{client}.key"))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request("POST", "/", body=TERMINAL_SHELL,
                     headers={"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_mutual_tls_authenticates_falco_without_a_token(pki):
    received = []
    config = FalcoHttpConfig(addr="127.0.0.1:0", tls_cert=str(pki / "server.pem"),
                             tls_key=str(pki / "server.key"), client_ca=str(pki / "ca.pem"),
                             node_name=NODE)
    source = start_falco_http(config, received.append, acting=True)  # mTLS suffices
    try:
        assert _https_post(source.port, pki, "client") == 200
        for client in (None, "stranger"):
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                _https_post(source.port, pki, client)
        assert _https_post(source.port, pki, "client") == 200  # undisturbed
        assert len(received) == 2
        assert source.responses[200] == 2
    finally:
        source.stop()


def test_client_ca_without_server_certificate_is_refused(pki):
    with pytest.raises(IntakeConfigError, match="need TLS"):
        check_intake_auth(FalcoHttpConfig(client_ca=str(pki / "ca.pem")), acting=True)


def test_mutual_tls_allow_list_of_client_names(pki):
    """The CA signs more than Falco's certificate: only the names allowed may post."""
    received = []
    config = FalcoHttpConfig(addr="127.0.0.1:0", tls_cert=str(pki / "server.pem"),
                             tls_key=str(pki / "server.key"), client_ca=str(pki / "ca.pem"),
                             client_names=("client",), node_name=NODE)
    source = start_falco_http(config, received.append, acting=True)
    try:
        assert _https_post(source.port, pki, "client") == 200
        assert _https_post(source.port, pki, "intruder") == 403  # same CA, other name
        assert len(received) == 1
        assert source.responses[403] == 1
    finally:
        source.stop()
    with pytest.raises(IntakeConfigError, match="client-ca"):
        check_intake_auth(FalcoHttpConfig(client_names=("client",)), acting=False)


def test_requests_per_client_are_limited():
    received = []
    source = start_falco_http(FalcoHttpConfig(addr="127.0.0.1:0", node_name=NODE,
                                              client_rate=0.2),
                              received.append, acting=False)
    try:
        codes = [_request(source.port, "POST", body=TERMINAL_SHELL)[0] for _ in range(3)]
        assert codes == [200, 429, 429]  # a burst of 5 s worth: one request at 0.2/s
        assert len(received) == 1
        assert source.responses[429] == 2
    finally:
        source.stop()


def test_client_rate_buckets_are_bounded():
    clock = [0.0]
    rate = ClientRate(1.0, clock=lambda: clock[0])
    for i in range(3 * MAX_TRACKED_CLIENTS):
        assert rate.allow(f"10.0.{i // 256}.{i % 256}")
    assert len(rate._buckets) == MAX_TRACKED_CLIENTS
    assert [rate.allow("192.0.2.1") for _ in range(6)] == [True] * 5 + [False]
    clock[0] += 1.0
    assert rate.allow("192.0.2.1")


def test_certificate_names_are_cn_and_sans():
    cert = {"subject": ((("commonName", "falco"),),),
            "subjectAltName": (("DNS", "falco.falco.svc"), ("IP Address", "10.0.0.1"))}
    assert certificate_names(cert) == {"falco", "falco.falco.svc", "10.0.0.1"}
    assert certificate_names({}) == set()
