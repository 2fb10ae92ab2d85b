"""End to end with the real responder, the real kubernetes client (against the local API
server in tests/k8s), a real OTLP receiver and real HTTP: one detection -> alert, audit
records and one trace, all joined by the trace id; the falco-http input driving the same
policies; metrics that match."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from enforcer.adapters.kube import KubeAdapter
from enforcer.alert_pipeline import AlertPipeline
from enforcer.audit.metrics_sink import MetricsAudit
from enforcer.audit.otel_sink import TracingAudit
from enforcer.audit.record import FanOut
from enforcer.audit.rotating_file import RotatingJsonlAudit
from enforcer.audit.tracing import TracingConfig, setup_tracing
from enforcer.metrics import Metrics
from enforcer.outputs.dispatcher import Dispatcher, OutputSpec
from enforcer.outputs.webhook import WebhookConfig, WebhookOutput
from enforcer.policy.guards import Guards
from enforcer.policy.loader import load_policies
from enforcer.respond.responder import Responder
from enforcer.respond.services import Services
from enforcer.sources.falco_http import parse_falco_alert
from tests.agent_process import AgentProcess
from tests.k8s.apiserver import ApiServer

DATA = Path(__file__).resolve().parents[2] / "data" / "falco-alerts"
TERMINAL_SHELL = (DATA / "terminal_shell_k8s.json").read_bytes()
# The same alert from the Falco of node-a, the node the agent answers for.
ON_NODE_A = json.dumps({**json.loads(TERMINAL_SHELL), "hostname": "node-a"}).encode()
POD = ("prod", "web-55696bc998-9j9zk")
POD_PATH = f"/api/v1/namespaces/{POD[0]}/pods/{POD[1]}"

POLICY = """
- policy: contain-shell
  match:
    rules: [Terminal shell in container]
    priority: ">=notice"
    tags: [container]
  actions:
    - label_pod: {labels: {enforcer.io/suspicious: "true"}}
    - delete_pod: {grace_period: 0}
  dry_run: {dry_run}
"""


@pytest.fixture
def api():
    with ApiServer() as server:
        server.cluster.add_pod(*POD, "node-a", {"app": "web"})
        server.cluster.add_node("node-a")
        yield server


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build(tmp_path, api, tracer, metrics, webhook_url, dry_run="true"):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("{dry_run}", dry_run))
    audit = TracingAudit(FanOut(RotatingJsonlAudit(tmp_path / "audit.jsonl"),
                                MetricsAudit(metrics)), tracer)
    responder = Responder(load_policies([policy]), audit, node_name="node-a",
                          guards=Guards(node_name="node-a"),
                          services=Services(kube=KubeAdapter.for_host(api.url))).start()
    dispatcher = Dispatcher([OutputSpec(WebhookOutput(WebhookConfig(webhook_url)))],
                            extra_fields={"environment": "production"},
                            metrics=metrics).start()
    return AlertPipeline(dispatcher, tracer, metrics, responder), responder, audit


def test_one_detection_one_trace_joined_with_alert_and_audit(
        tmp_path, api, otlp_receiver, http_recorder):
    tracer = setup_tracing(TracingConfig(endpoint=otlp_receiver.endpoint,
                                         schedule_delay_ms=50),
                           hostname="node-a", environ={"NODE_NAME": "node-a"})
    metrics = Metrics()
    pipeline, responder, audit = build(tmp_path, api, tracer, metrics, http_recorder.url)

    sent = pipeline.emit(parse_falco_alert(TERMINAL_SHELL))
    responder.drain()
    responder.stop()
    pipeline.close()
    spans = otlp_receiver.wait_for(lambda got: len(got) >= 4)
    audit.close()
    tracer.shutdown()

    trace_id = sent.trace_id
    assert trace_id and len(spans) == 4
    assert {s.trace_id for s in spans} == {trace_id}
    root = next(s for s in spans if s.name == "enforcer.match")
    decision = next(s for s in spans if s.name == "enforcer.decision")
    actions = sorted((s for s in spans if s.name == "enforcer.action"),
                     key=lambda s: s.attributes["enforcer.action.index"])
    assert root.parent_span_id == "" and decision.parent_span_id == root.span_id
    assert [a.parent_span_id for a in actions] == [decision.span_id] * 2
    assert root.attributes["enforcer.rule"] == "Terminal shell in container"
    assert root.attributes["enforcer.field.k8s.pod.name"] == POD[1]
    assert root.resource["k8s.node.name"] == "node-a"
    assert decision.attributes["enforcer.policy"] == "contain-shell"
    assert decision.attributes["enforcer.dry_run"] is True
    assert [a.attributes["enforcer.action"] for a in actions] == ["label_pod", "delete_pod"]
    assert [a.attributes["enforcer.outcome"] for a in actions] == ["dry-run", "dry-run"]
    assert all(a.attributes["enforcer.dry_run"] is True for a in actions)
    assert actions[0].attributes["enforcer.target"] == f"namespace={POD[0]} pod={POD[1]}"

    # the alert the webhook received carries the trace id (and the static field)
    (body,) = [json.loads(b) for b in http_recorder.bodies]
    assert body["trace_id"] == trace_id
    assert body["output_fields"]["environment"] == "production"
    assert body["rule"] == "Terminal shell in container"
    # every audit record of the detection carries it too
    records = read_jsonl(tmp_path / "audit.jsonl")
    assert [r["kind"] for r in records] == ["match", "decision", "action", "action"]
    assert {r["trace_id"] for r in records} == {trace_id}
    # dry-run reached the API server as dryRun=All, and nothing was deleted
    mutations = api.cluster.mutations()
    assert [(m["method"], m["path"]) for m in mutations] == [
        ("PATCH", POD_PATH), ("DELETE", POD_PATH)]
    assert all(m["query"].get("dryRun") == ["All"] and m["code"] == 200 for m in mutations)
    assert api.cluster.pods.get(POD) is not None
    assert metrics.registry.get_sample_value(
        "enforcer_actions_total",
        {"action": "delete_pod", "outcome": "dry-run", "dry_run": "true"}) == 1


def test_collector_down_n_decisions_n_records(tmp_path, api, http_recorder):
    tracer = setup_tracing(TracingConfig(endpoint="http://127.0.0.1:9", timeout=30,
                                         schedule_delay_ms=10, max_queue_size=32),
                           environ={})
    metrics = Metrics()
    pipeline, responder, audit = build(tmp_path, api, tracer, metrics, http_recorder.url)
    n = 30  # each answer is four real API calls; 30 keep the suite quick
    sent = [pipeline.emit(parse_falco_alert(TERMINAL_SHELL)) for _ in range(n)]
    responder.drain()
    responder.stop()
    audit.close()
    pipeline.close()
    tracer.shutdown(timeout_s=1)
    records = read_jsonl(tmp_path / "audit.jsonl")
    decisions = [r for r in records if r["kind"] == "decision"]
    assert len(decisions) == n
    assert len([r for r in records if r["kind"] == "action"]) == 2 * n
    assert [d["trace_id"] for d in decisions] == [a.trace_id for a in sent]
    assert responder.stats()["matches"] == n


# --- the falco-http input, as `enforcer --source falco-http` runs it ----------------------

def _post(port, body, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/", body=body, headers=headers or {})
        return conn.getresponse().status
    finally:
        conn.close()


def test_falco_http_triggers_policy_in_dry_run_with_audit_and_metrics(
        tmp_path, api, otlp_receiver, http_recorder, enforcer_cmd, cli_env):
    """The agent as a user runs it (a child process, `enforcer --source falco-http`), with
    the real kubernetes client (KUBECONFIG). The intake is unauthenticated, so the received
    alerts' dry-run answers make no Kubernetes Event (anyone could have posted them)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": api.url}}],
        "users": [{"name": "t", "user": {"token": "x"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}]}))
    env = {k: v for k, v in cli_env.items()
           if not k.startswith(("OTEL_", "ENFORCER_")) and k != "KUBERNETES_SERVICE_HOST"}
    env.update(KUBECONFIG=str(kubeconfig), NODE_NAME="node-a")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("{dry_run}", "false"))
    audit_path = tmp_path / "audit.jsonl"
    agent = AgentProcess([
        *enforcer_cmd, "--source", "falco-http", "--policies", str(policy), "--dry-run",
        "--audit-log", str(audit_path), "--http-addr", "127.0.0.1:0",
        "--falco-http-addr", "127.0.0.1:0", "--falco-http-max-body", "16Ki",
        "--otlp-endpoint", otlp_receiver.endpoint, "--otlp-schedule-delay-ms", "50",
        "--webhook-url", http_recorder.url, "--extra-field", "environment=production",
        "--kubernetes-events", "true"], env, tmp_path, audit_path, timeout=60)
    try:
        port = agent.falco_port
        assert port is not None
        assert _post(port, ON_NODE_A) == 200
        assert _post(port, b'{"rule": "x", "priority": ') == 400
        assert _post(port, b"{" + b" " * (32 * 1024) + b"}") == 413
        assert _post(port, ON_NODE_A) == 200  # undisturbed

        agent.wait("the answers", lambda: len([r for r in agent.records()
                                               if r["kind"] == "action"]) == 4)
        otlp_receiver.wait_for(lambda got: sum(s.name == "enforcer.match" for s in got) == 2)
        http_recorder.wait(lambda r: len(r.bodies) == 2)
        status, text = agent.get("/metrics")
        assert status == 200
        assert agent.get("/readyz")[0] == 200
    finally:
        code = agent.stop()
    assert code == 0, agent.stderr

    records = read_jsonl(audit_path)
    decisions = [r for r in records if r["kind"] == "decision"]
    assert len(decisions) == 2
    assert all(d["policy"] == "contain-shell" and d["dry_run"] is True
               and d["reason"] == "global dry-run" for d in decisions)
    actions = [(r["action"], r["outcome"]) for r in records if r["kind"] == "action"]
    assert actions == [("label_pod", "dry-run"), ("delete_pod", "dry-run")] * 2
    webhook_ids = {json.loads(b)["trace_id"] for b in http_recorder.bodies}
    assert webhook_ids == {d["trace_id"] for d in decisions}
    assert len(webhook_ids) == 2
    assert all(json.loads(b)["output_fields"]["environment"] == "production"
               for b in http_recorder.bodies)
    # dry-run of received alerts: every mutation went as dryRun=All, nothing deleted, and
    # no Event written on their word
    mutations = [m for m in api.cluster.mutations() if not m["path"].endswith("/events")]
    assert [(m["method"], m["path"]) for m in mutations] == [
        ("PATCH", POD_PATH), ("DELETE", POD_PATH)] * 2
    assert all(m["query"].get("dryRun") == ["All"] and m["code"] == 200 for m in mutations)
    assert api.cluster.pods.get(POD) is not None
    assert api.cluster.events == []

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("enforcer_rule_matches_total", (("priority", "Notice"),
                                                    ("rule", "Terminal shell in container")))] == 2
    assert samples[("enforcer_actions_total", (("action", "label_pod"), ("dry_run", "true"),
                                               ("outcome", "dry-run")))] == 2
    assert samples[("enforcer_falco_http_requests_total", (("code", "200"),))] == 2
    assert samples[("enforcer_falco_http_requests_total", (("code", "400"),))] == 1
    assert samples[("enforcer_falco_http_requests_total", (("code", "413"),))] == 1
    assert ("enforcer_policy_reloads_total", (("result", "success"),)) not in samples
    assert not [k for k in samples if k[0] == "enforcer_kubernetes_events_total"]

    err = agent.stderr
    assert "Events detected: 2" in err
    assert "Responses by action and outcome:" in err
    assert "   delete_pod: 2 (dry-run: 2)" in err
    assert "falco-http requests: 4 (2 rejected)" in err
    assert "Traceback" not in err
