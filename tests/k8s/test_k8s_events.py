"""Kubernetes Events for response outcomes on pods, through the real `kubernetes` client
against the local API server: one core/v1 Event per outcome (done, dry-run, failed,
suppressed) on the pod, with the rule, action and outcome; a failing API server costs no
response and is audited."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from enforcer.adapters.kube import KubeAdapter
from enforcer.alert import Alert
from enforcer.audit.jsonl import JsonlAudit, read_audit
from enforcer.policy.guards import Guards
from enforcer.policy.loader import load_policies
from enforcer.priority import Priority
from enforcer.respond.kube_events import KubeEvents
from enforcer.respond.responder import Responder
from enforcer.respond.retry import RetryPolicy
from enforcer.respond.services import Services
from tests.k8s.apiserver import ApiServer, hanging

EVENTS_PATH = "/api/v1/namespaces/{ns}/events"


TOKEN = "sa-token-for-tests"


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with ApiServer(token=TOKEN) as server:
        server.cluster.add_pod("prod", "web-1", "node-a", {"app": "web"})
        server.cluster.add_pod("kube-system", "coredns-1", "node-a")
        yield server


def pod_alert(namespace: str = "prod", pod: str = "web-1") -> Alert:
    return Alert(rule="Terminal shell in container", priority=Priority.NOTICE, output="shell",
                 output_fields={"k8s.ns.name": namespace, "k8s.pod.name": pod},
                 time_ns=time.time_ns(), tags=("container",), trace_id="ab" * 16,
                 event={"k8s.ns.name": namespace, "k8s.pod.name": pod,
                        "k8s.pod.uid": f"uid-{namespace}-{pod}",
                        "container.id": "abcdef012345"})


def respond(tmp_path: Path, api_url: str, actions: str, alerts: list[Alert],
            dry_run: str = "false", events_url: str | None = None,
            extra: str = "") -> tuple[list[dict[str, Any]], KubeEvents]:
    path = tmp_path / "policy.yaml"
    path.write_text(f"""
- policy: contain
  match: {{rules: [Terminal shell in container]}}
  actions: {actions}
  dry_run: {dry_run}
{extra}""")
    audit = JsonlAudit(tmp_path / "audit.jsonl")
    kube = KubeAdapter.for_host(api_url, TOKEN)
    events_kube = KubeAdapter.for_host(events_url, TOKEN) if events_url else kube
    events = KubeEvents(lambda: events_kube, audit=audit, node_name="node-a").start()
    responder = Responder(load_policies([path]), audit, node_name="node-a",
                          guards=Guards(node_name="node-a"), services=Services(kube=kube),
                          retry=RetryPolicy(attempts=2, max_seconds=5),
                          on_outcome=events.submit).start()
    for alert in alerts:
        responder.submit(alert)
    responder.drain()
    responder.stop()
    events.drain()
    events.stop()
    audit.close()
    return read_audit(tmp_path / "audit.jsonl"), events


def event_posts(api: ApiServer, namespace: str = "prod") -> list[dict[str, Any]]:
    return [r for r in api.cluster.requests
            if (r["method"], r["path"]) == ("POST", EVENTS_PATH.format(ns=namespace))]


def test_done_and_dry_run_outcomes_become_events_on_the_pod(tmp_path: Path,
                                                            api: ApiServer) -> None:
    records, events = respond(tmp_path, api.url, "[{label_pod: {labels: {x: y}}}, "
                                                 "{delete_pod: {grace_period: 0}}]",
                              [pod_alert()])
    outcomes = [(r["action"], r["outcome"]) for r in records if r["kind"] == "action"]
    assert outcomes == [("label_pod", "done"), ("delete_pod", "done")]
    posts = event_posts(api)
    assert len(posts) == 2 and events.counts["created"] == 2
    label, delete = (p["body"] for p in posts)
    assert label["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": "web-1",
                                       "namespace": "prod", "uid": "uid-prod-web-1"}
    assert label["metadata"]["namespace"] == "prod"
    assert label["metadata"]["name"].startswith("web-1.")
    assert label["metadata"]["name"] != delete["metadata"]["name"]
    assert (label["reason"], label["type"]) == ("EnforcerLabelPod", "Warning")
    assert (delete["reason"], delete["type"]) == ("EnforcerDeletePod", "Warning")
    assert delete["message"].startswith("rule 'Terminal shell in container' (Notice): "
                                        "policy 'contain' action delete_pod done")
    assert "trace " + "ab" * 16 in delete["message"]
    assert delete["source"] == {"component": "enforcer", "host": "node-a"}
    assert delete["reportingComponent"] == "enforcer"
    assert delete["reportingInstance"] == "enforcer-node-a"
    assert delete["action"] == "delete_pod"
    assert delete["count"] == 1
    # MicroTime, in UTC (the client writes the offset as +00:00, which RFC 3339 allows)
    assert datetime.fromisoformat(delete["eventTime"]).utcoffset() == timedelta(0)
    assert delete["metadata"]["annotations"]["enforcer.io/policy"] == "contain"
    # the Event itself is never a dry run: it records what happened
    assert all(p["query"] == {} for p in posts)
    assert len(api.cluster.events) == 2


def test_dry_run_failed_and_suppressed_outcomes(tmp_path: Path, api: ApiServer) -> None:
    api.cluster.fail_next("PATCH", "/api/v1/namespaces/prod/pods/web-1", 403)
    records, _ = respond(tmp_path, api.url,
                         "[{label_pod: {labels: {x: y}}}, {delete_pod: {}}]",
                         [pod_alert(), pod_alert("kube-system", "coredns-1")])
    outcomes = [(r["action"], r["outcome"]) for r in records if r["kind"] == "action"]
    assert outcomes == [("label_pod", "failed"), ("delete_pod", "done"),
                        ("label_pod", "suppressed"), ("delete_pod", "suppressed")]
    prod = [p["body"] for p in event_posts(api)]
    assert [(b["reason"], b["type"]) for b in prod] == [("EnforcerFailed", "Warning"),
                                                        ("EnforcerDeletePod", "Warning")]
    assert "action label_pod failed: Kubernetes API answered 403" in prod[0]["message"]
    system = [p["body"] for p in event_posts(api, "kube-system")]
    assert [(b["reason"], b["type"]) for b in system] == [("EnforcerSuppressed", "Normal")] * 2
    assert system[0]["involvedObject"]["name"] == "coredns-1"
    assert "protected" in system[0]["message"]

    api.cluster.events.clear()
    api.cluster.requests.clear()
    api.cluster.add_pod("prod", "web-2", "node-a")
    respond(tmp_path, api.url, "[{delete_pod: {}}]", [pod_alert("prod", "web-2")],
            dry_run="true")
    (dry,) = [p["body"] for p in event_posts(api)]
    assert (dry["reason"], dry["type"]) == ("EnforcerDryRun", "Normal")
    assert "action delete_pod dry-run" in dry["message"]
    assert ("prod", "web-2") in api.cluster.pods


def test_no_event_without_a_pod(tmp_path: Path, api: ApiServer) -> None:
    host = Alert(rule="Terminal shell in container", priority=Priority.NOTICE, output="x",
                 output_fields={}, time_ns=time.time_ns(), event={"proc.name": "bash"})
    records, events = respond(tmp_path, api.url, "[{label_pod: {labels: {x: y}}}]", [host])
    assert [r["outcome"] for r in records if r["kind"] == "action"] == ["skipped"]
    assert event_posts(api) == [] and events.counts["created"] == 0


def test_a_failing_api_server_costs_no_response_and_is_audited(tmp_path: Path,
                                                               api: ApiServer) -> None:
    api.cluster.fail_next("POST", EVENTS_PATH.format(ns="prod"), 500)
    api.cluster.fail_next("POST", EVENTS_PATH.format(ns="prod"), 403)
    records, events = respond(tmp_path, api.url, "[{label_pod: {labels: {x: y}}}, "
                                                 "{label_pod: {labels: {z: w}}}, "
                                                 "{label_pod: {labels: {v: u}}}]",
                              [pod_alert()])
    assert [r["outcome"] for r in records if r["kind"] == "action"] == ["done"] * 3
    assert events.counts == {"created": 1, "failed": 2, "dropped": 0}
    failed = [r for r in records if r["kind"] == "k8s_event"]
    assert [r["outcome"] for r in failed] == ["failed", "failed"]
    assert "500" in failed[0]["error"] and "403" in failed[1]["error"]
    assert failed[0]["target"] == {"namespace": "prod", "pod": "web-1"}
    assert failed[0]["reason"] == "EnforcerLabelPod"
    assert api.cluster.pods[("prod", "web-1")]["metadata"]["labels"] == {
        "app": "web", "x": "y", "z": "w", "v": "u"}


def test_an_unreachable_api_server_is_audited(tmp_path: Path) -> None:
    records, events = respond(tmp_path, "http://127.0.0.1:9",
                              "[{label_pod: {labels: {x: y}}}]", [pod_alert()])
    assert [r["outcome"] for r in records if r["kind"] == "action"] == ["failed"]
    assert events.counts["failed"] == 1
    (failed,) = [r for r in records if r["kind"] == "k8s_event"]
    assert "unreachable" in failed["error"]


def test_a_hanging_api_server_never_blocks_the_responder(tmp_path: Path,
                                                         api: ApiServer) -> None:
    """The Events go to an address that accepts and never answers: the responder still
    finishes every response while the first Event's POST hangs."""
    audit = JsonlAudit(tmp_path / "audit.jsonl")
    path = tmp_path / "policy.yaml"
    path.write_text("- policy: contain\n"
                    "  match: {rules: [Terminal shell in container]}\n"
                    "  actions: [{label_pod: {labels: {x: y}}}, {label_pod: {labels: {z: w}}}]\n"
                    "  dry_run: false\n")
    kube = KubeAdapter.for_host(api.url, TOKEN)
    with hanging() as hang:
        stuck = KubeAdapter.for_host(hang.url, TOKEN)
        events = KubeEvents(lambda: stuck, audit=audit, node_name="node-a").start()
        responder = Responder(load_policies([path]), audit, node_name="node-a",
                              guards=Guards(node_name="node-a"), services=Services(kube=kube),
                              retry=RetryPolicy(attempts=2, max_seconds=5),
                              on_outcome=events.submit).start()
        for _ in range(3):
            responder.submit(pod_alert())
        drained = threading.Thread(target=responder.drain, daemon=True)
        drained.start()
        drained.join(60)
        assert not drained.is_alive(), "the responder waited on the hanging API server"
        assert hang.connected.wait(30), "no Event was sent"
        actions = [r for r in read_audit(tmp_path / "audit.jsonl") if r["kind"] == "action"]
        assert [r["outcome"] for r in actions] == ["done", "done"] + ["noop"] * 4
        assert events.counts["created"] == events.counts["failed"] == 0  # still hanging
        responder.stop()
    events.drain()  # the hang is over: every Event fails
    events.stop()
    audit.close()
    assert events.counts["created"] == 0 and events.counts["failed"] >= 1


BREAKER = "  breaker: {workloads: 1, window: 10m, cooloff: 10m}\n"


def cart_alert() -> Alert:
    """A match in another pod (its own container): a second workload."""
    alert = pod_alert("shop", "cart-1")
    alert.event["container.id"] = "fedcba987654"
    return alert


def test_a_breaker_suspension_is_a_warning_event_on_the_pod_that_tripped_it(
        tmp_path: Path, api: ApiServer) -> None:
    """A policy that acted on its one allowed pod is suspended by a second pod: the second
    pod is left alone and carries an EnforcerPolicySuspended Warning that says why."""
    api.cluster.add_pod("shop", "cart-1", "node-a")
    records, events = respond(tmp_path, api.url, "[{delete_pod: {grace_period: 0}}]",
                              [pod_alert(), cart_alert()], extra=BREAKER)
    assert [r["outcome"] for r in records if r["kind"] == "breaker"] == ["tripped"]
    assert ("prod", "web-1") not in api.cluster.pods
    assert ("shop", "cart-1") in api.cluster.pods  # suspended for it: not deleted
    (body,) = [p["body"] for p in event_posts(api, "shop")]
    assert (body["reason"], body["type"]) == ("EnforcerPolicySuspended", "Warning")
    assert body["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": "cart-1",
                                      "namespace": "shop", "uid": "uid-shop-cart-1"}
    assert body["action"] == "policy-suspended"
    assert "policy 'contain'" in body["message"] and "suspended" in body["message"]
    assert "pod:uid-shop-cart-1" in body["message"]  # the workload that tripped it
    assert body["metadata"]["annotations"]["enforcer.io/policy"] == "contain"
    assert len(api.cluster.events) == 2 and events.counts["created"] == 2


@pytest.mark.parametrize("code", [409, 500, 503])
def test_a_refused_suspension_event_is_audited_and_never_retried(
        tmp_path: Path, api: ApiServer, code: int) -> None:
    """The API server answers the suspension's Event with a conflict or a server error:
    one request, no retry (the audit log is the durable record), a `k8s_event` record
    says so, and the suspension itself stands."""
    api.cluster.add_pod("shop", "cart-1", "node-a")
    api.cluster.fail_next("POST", EVENTS_PATH.format(ns="shop"), code)
    records, events = respond(tmp_path, api.url, "[{delete_pod: {grace_period: 0}}]",
                              [pod_alert(), cart_alert()], extra=BREAKER)
    assert [r["outcome"] for r in records if r["kind"] == "breaker"] == ["tripped"]
    assert len(event_posts(api, "shop")) == 1  # answered once: not retried
    assert api.cluster.events == [e for e in api.cluster.events
                                  if e["metadata"]["namespace"] == "prod"]
    assert events.counts == {"created": 1, "failed": 1, "dropped": 0}
    (failed,) = [r for r in records if r["kind"] == "k8s_event"]
    assert failed["outcome"] == "failed" and str(code) in failed["error"]
    assert failed["reason"] == "EnforcerPolicySuspended"
    assert failed["target"] == {"namespace": "shop", "pod": "cart-1"}
    assert failed["policy"] == "contain"
    assert ("shop", "cart-1") in api.cluster.pods
