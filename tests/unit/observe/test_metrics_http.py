"""/metrics, /healthz and /readyz on one server; metric values match what happened."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from enforcer.audit.metrics_sink import MetricsAudit
from enforcer.cli import observe_args
from enforcer.health import POLICIES_LOADED, PROBES_ATTACHED, Readiness
from enforcer.http_server import parse_addr, start_http_server
from enforcer.metrics import Metrics
from enforcer.outputs.dispatcher import Dispatcher, OutputSpec, as_output


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _record(kind, outcome, **kw):
    base = dict(kind=kind, outcome=outcome, action=None, policy=None, dry_run=None,
                guard=None, duration_ns=None)
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture
def served():
    metrics, readiness = Metrics(), Readiness()
    server = start_http_server("127.0.0.1:0", metrics, readiness)
    yield server.port, metrics, readiness
    server.stop()


def test_health_and_readiness(served):
    port, _, readiness = served
    assert _get(port, "/healthz") == (200, b"ok\n")
    code, body = _get(port, "/readyz")
    assert code == 503
    state = json.loads(body)
    assert state["ready"] is False
    assert set(state["conditions"]) == {PROBES_ATTACHED, POLICIES_LOADED}
    readiness.set(POLICIES_LOADED, True, "3 policies")
    assert _get(port, "/readyz")[0] == 503  # probes still not attached
    readiness.set(PROBES_ATTACHED, True, "12 tracepoints")
    readiness.warn("kernel_drops", "412 events dropped by the kernel in the last minute")
    code, body = _get(port, "/readyz")
    state = json.loads(body)
    assert code == 200 and state["ready"] is True
    assert "kernel_drops" in state["warnings"]  # degraded is said, not hidden
    assert _get(port, "/nope")[0] == 404


def test_metrics_parse_and_match_what_happened(served, alert_factory):
    port, metrics, _ = served
    # the source's loop: plain counters
    for evt_type, n in (("execve", 7), ("openat", 30)):
        for _ in range(n):
            metrics.event_counts[evt_type] += 1
    metrics.read_kernel_drops_with(lambda: 5)
    for _ in range(3):
        metrics.rule_matched("Terminal shell in container", "Notice")
    metrics.rule_matched("Read sensitive file untrusted", "Warning")
    metrics.policies_loaded(True)
    metrics.policies_loaded(False)
    # the responder's audit records, counted by the metrics sink
    sink = MetricsAudit(metrics)
    sink.record(_record("action", "done", action="kill", dry_run=False, duration_ns=2_000_000))
    sink.record(_record("action", "dry-run", action="delete_pod", dry_run=True,
                        duration_ns=40_000_000))
    sink.record(_record("action", "dry-run", action="delete_pod", dry_run=True,
                        duration_ns=30_000_000))
    sink.record(_record("action", "suppressed", action="kill", dry_run=False,
                        guard="pid1", duration_ns=100_000))
    sink.record(_record("decision", "rate-limited", policy="contain-shell"))
    sink.record(_record("action", "cooldown", action="kill", policy="contain-shell",
                        dry_run=False, duration_ns=1000))
    sink.record(_record("drop", "dropped"))
    # an output that cannot keep up
    dispatcher = Dispatcher([OutputSpec(as_output("slow", lambda a: None), queue_size=1)],
                            metrics=metrics)  # not started: its queue fills at once
    for _ in range(4):
        dispatcher.dispatch(alert_factory())

    code, body = _get(port, "/metrics")
    assert code == 200
    s = _samples(body.decode())
    assert s[("enforcer_events_total", (("type", "execve"),))] == 7
    assert s[("enforcer_events_total", (("type", "openat"),))] == 30
    assert s[("enforcer_kernel_drops_total", ())] == 5
    assert s[("enforcer_rule_matches_total", (("priority", "Notice"),
                                              ("rule", "Terminal shell in container")))] == 3
    assert s[("enforcer_actions_total", (("action", "delete_pod"), ("dry_run", "true"),
                                         ("outcome", "dry-run")))] == 2
    assert s[("enforcer_actions_total", (("action", "kill"), ("dry_run", "false"),
                                         ("outcome", "done")))] == 1
    assert s[("enforcer_guard_suppressed_total", (("guard", "pid1"),))] == 1
    assert s[("enforcer_rate_limited_total", (("policy", "contain-shell"),))] == 2
    assert s[("enforcer_action_duration_seconds_count", (("action", "delete_pod"),))] == 2
    assert s[("enforcer_action_duration_seconds_bucket", (("action", "delete_pod"),
                                                          ("le", "0.05")))] == 2
    assert s[("enforcer_action_duration_seconds_bucket", (("action", "delete_pod"),
                                                          ("le", "0.025")))] == 0
    assert s[("enforcer_output_drops_total", (("output", "slow"),))] == 3
    assert s[("enforcer_policy_reloads_total", (("result", "success"),))] == 1
    assert s[("enforcer_policy_reloads_total", (("result", "failure"),))] == 1
    assert s[("enforcer_responder_drops_total", ())] == 1


def test_registry_is_private():
    """Two agents in one process (tests) never share counters."""
    a, b = Metrics(), Metrics()
    a.rule_matched("r", "Notice")
    assert b.registry.get_sample_value("enforcer_rule_matches_total",
                                       {"rule": "r", "priority": "Notice"}) is None


@pytest.mark.parametrize(("text", "addr"), [
    ("0.0.0.0:9376", ("0.0.0.0", 9376)), (":9376", ("0.0.0.0", 9376)),
    ("[::1]:80", ("::1", 80)), ("localhost:0", ("localhost", 0)),
])
def test_parse_addr(text, addr):
    assert parse_addr(text) == addr


@pytest.mark.parametrize("bad", ["9376", "host:port", "h:70000"])
def test_parse_addr_rejects(bad):
    with pytest.raises(ValueError, match="address"):
        parse_addr(bad)


def test_losses_are_said_in_readyz_without_failing_it():


    parser = argparse.ArgumentParser()
    observe_args.add_arguments(parser)
    args = parser.parse_args(["--http-addr", "127.0.0.1:0"])
    obs = observe_args.from_args(args, hostname="node-a")
    drops = {"n": 0}
    obs.metrics.read_kernel_drops_with(lambda: drops["n"])
    obs.start()
    try:
        obs.readiness.set(PROBES_ATTACHED)
        obs.readiness.set(POLICIES_LOADED)
        code, body = _get(obs.http.port, "/readyz")
        assert code == 200 and json.loads(body)["warnings"] == {}
        drops["n"] = 42
        code, body = _get(obs.http.port, "/readyz")
        assert code == 200
        assert json.loads(body)["warnings"] == {
            "kernel_drops": "42 events dropped by the kernel since start"}
    finally:
        obs.close()


def test_a_custom_health_path_answers_beside_healthz() -> None:
    server = start_http_server("127.0.0.1:0", Metrics(), Readiness(),
                               health_path="/falco-health")
    try:
        assert _get(server.port, "/falco-health") == (200, b"ok\n")
        assert _get(server.port, "/healthz") == (200, b"ok\n")
        assert _get(server.port, "/other")[0] == 404
    finally:
        server.stop()


def test_a_falco_pem_that_is_not_a_certificate_and_key_says_what_to_do(tmp_path) -> None:
    from enforcer.http_server import tls_context

    with pytest.raises(ValueError, match="cannot read .*none.pem: No such file"):
        tls_context(str(tmp_path / "none.pem"))
    bad = tmp_path / "falco.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"not a PEM file holding a certificate and its key.*"
                                         r"cat certificate.pem key.pem > falco.pem"):
        tls_context(str(bad))
