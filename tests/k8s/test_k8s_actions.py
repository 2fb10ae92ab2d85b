"""Kubernetes responses through the real `kubernetes` client against a local API server:
paths, verbs and bodies; dryRun=All; retries on 429 (Retry-After) and 503; 404/409 as done;
refusals for protected namespaces and for pods on other nodes. The server wants the bearer
token, and refuses (422) the bodies the real one would."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from enforcer.adapters.kube import KubeAdapter
from enforcer.alert import Alert
from enforcer.audit.jsonl import JsonlAudit, read_audit
from enforcer.errors import PermanentActionError
from enforcer.policy.guards import Guards
from enforcer.policy.loader import load_policies
from enforcer.priority import Priority
from enforcer.respond.responder import Responder
from enforcer.respond.retry import RetryPolicy
from enforcer.respond.services import Services
from tests.k8s.apiserver import ApiServer

POD_PATH = "/api/v1/namespaces/prod/pods/web-1"
NETPOLS_PATH = "/apis/networking.k8s.io/v1/namespaces/prod/networkpolicies"
TOKEN = "sa-token-for-tests"
# a taint the node has before the agent cordons it (another controller's)
EXISTING_TAINT = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with ApiServer(token=TOKEN) as server:
        server.cluster.add_pod("prod", "web-1", "node-a", {"app": "web"})
        server.cluster.add_pod("prod", "far-1", "node-b")
        server.cluster.add_pod("kube-system", "coredns-1", "node-a")
        server.cluster.add_node("node-a", taints=[EXISTING_TAINT])
        yield server


def pod_alert(namespace: str = "prod", pod: str = "web-1") -> Alert:
    return Alert(rule="Terminal shell in container", priority=Priority.NOTICE, output="shell",
                 output_fields={}, time_ns=time.time_ns(), tags=("container", "shell"),
                 event={"k8s.ns.name": namespace, "k8s.pod.name": pod,
                        "container.id": "abcdef012345"})


def respond(tmp_path: Path, api: ApiServer, actions: str, alerts: list[Alert] | None = None,
            dry_run: str = "false", node_name: str | None = "node-a",
            retry: RetryPolicy | None = None) -> list[dict[str, Any]]:
    path = tmp_path / "policy.yaml"
    path.write_text(f"""
- policy: contain
  match: {{rules: [Terminal shell in container]}}
  actions: {actions}
  dry_run: {dry_run}
""")
    audit_path = tmp_path / "audit.jsonl"
    audit_path.unlink(missing_ok=True)
    responder = Responder(load_policies([path]), JsonlAudit(audit_path), node_name=node_name,
                          guards=Guards(node_name=node_name),
                          services=Services(kube=KubeAdapter.for_host(api.url, TOKEN)),
                          retry=retry or RetryPolicy(attempts=4, max_seconds=10)).start()
    for alert in alerts or [pod_alert()]:
        responder.submit(alert)
    responder.drain()
    responder.stop()
    return [r for r in read_audit(audit_path) if r["kind"] == "action"]


def test_delete_pod_sends_delete_with_grace_period(tmp_path: Path, api: ApiServer) -> None:
    (rec,) = respond(tmp_path, api, "[{delete_pod: {grace_period: 0}}]")
    assert rec["outcome"] == "done", rec
    (delete,) = api.cluster.mutations()
    assert (delete["method"], delete["path"]) == ("DELETE", POD_PATH)
    assert delete["query"] == {"gracePeriodSeconds": ["0"]}
    assert ("prod", "web-1") not in api.cluster.pods
    assert rec["render"] == {"method": "DELETE", "path": POD_PATH,
                             "query": {"gracePeriodSeconds": 0}}


def test_dry_run_uses_server_side_dry_run(tmp_path: Path, api: ApiServer) -> None:
    records = respond(tmp_path, api, "[{delete_pod: {}}, {label_pod: {labels: {x: y}}}, "
                                     "{networkpolicy: {}}, {cordon: {}}]", dry_run="true")
    assert [r["outcome"] for r in records] == ["dry-run"] * 4, records
    mutations = api.cluster.mutations()
    assert len(mutations) == 5  # delete, label, netpol create, netpol label, cordon
    assert all(m["query"].get("dryRun") == ["All"] for m in mutations)
    assert ("prod", "web-1") in api.cluster.pods
    assert api.cluster.pods[("prod", "web-1")]["metadata"]["labels"] == {"app": "web"}
    assert not api.cluster.netpols
    assert not api.cluster.nodes["node-a"]["spec"].get("unschedulable")
    assert "would delete pod prod/web-1" in records[0]["message"]


def test_label_pod_merge_patches_labels(tmp_path: Path, api: ApiServer) -> None:
    (rec,) = respond(tmp_path, api, "[{label_pod: {labels: {enforcer.io/suspicious: 'true'}}}]")
    assert rec["outcome"] == "done"
    (patch,) = api.cluster.mutations()
    assert patch["method"] == "PATCH" and patch["path"] == POD_PATH
    assert patch["content_type"] == "application/merge-patch+json"
    assert patch["body"] == {"metadata": {"labels": {"enforcer.io/suspicious": "true"}}}
    assert api.cluster.pods[("prod", "web-1")]["metadata"]["labels"] == {
        "app": "web", "enforcer.io/suspicious": "true"}
    (again,) = respond(tmp_path, api, "[{label_pod: {labels: {enforcer.io/suspicious: 'true'}}}]")
    assert again["outcome"] == "noop"


def test_cordon_patches_this_node_with_a_taint(tmp_path: Path, api: ApiServer) -> None:
    (rec,) = respond(tmp_path, api, "[{cordon: {taint: {key: enforcer.io/compromised, "
                                    "effect: NoExecute}}}]")
    assert rec["outcome"] == "done", rec
    (patch,) = api.cluster.mutations()
    assert patch["path"] == "/api/v1/nodes/node-a"
    # a merge patch replaces the whole list: the node's own taint must be in it
    assert patch["body"] == {"spec": {"unschedulable": True, "taints": [
        EXISTING_TAINT, {"key": "enforcer.io/compromised", "effect": "NoExecute"}]}}
    assert api.cluster.nodes["node-a"]["spec"]["taints"] == [
        EXISTING_TAINT, {"key": "enforcer.io/compromised", "effect": "NoExecute"}]
    (again,) = respond(tmp_path, api, "[{cordon: {taint: {key: enforcer.io/compromised, "
                                      "effect: NoExecute}}}]")
    assert again["outcome"] == "noop"


def test_networkpolicy_creates_then_patches_on_409(tmp_path: Path, api: ApiServer) -> None:
    actions = "[{networkpolicy: {allow_dns: true, allowed_cidrs: [10.99.0.0/24], " \
              "allowed_ports: [22]}}]"
    (rec,) = respond(tmp_path, api, actions)
    assert rec["outcome"] == "done", rec
    create, label = api.cluster.mutations()
    assert create["method"] == "POST"
    assert create["path"] == "/apis/networking.k8s.io/v1/namespaces/prod/networkpolicies"
    spec = create["body"]["spec"]
    assert spec["podSelector"] == {"matchLabels": {"enforcer.io/isolated": "true"}}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert {"protocol": "UDP", "port": 53} in spec["egress"][0]["ports"]
    assert spec["ingress"] == [{"from": [{"ipBlock": {"cidr": "10.99.0.0/24"}}],
                                "ports": [{"protocol": "TCP", "port": 22}]}]
    assert label["body"] == {"metadata": {"labels": {"enforcer.io/isolated": "true"}}}
    assert api.cluster.pods[("prod", "web-1")]["metadata"]["labels"]["enforcer.io/isolated"] \
        == "true"
    api.cluster.requests.clear()
    (again,) = respond(tmp_path, api, actions)
    assert again["outcome"] == "done" and again["detail"]["networkpolicy"] == "patched"
    assert [m["method"] for m in api.cluster.mutations()] == ["POST", "PATCH", "PATCH"]


def test_429_with_retry_after_is_honoured(tmp_path: Path, api: ApiServer) -> None:
    api.cluster.fail_next("DELETE", POD_PATH, 429, {"Retry-After": "1"})
    (rec,) = respond(tmp_path, api, "[{delete_pod: {}}]")
    assert rec["outcome"] == "done", rec
    assert rec["retries"] == 1
    assert rec["detail"]["retry_waits"] == [1.0]
    deletes = [r for r in api.cluster.requests if r["method"] == "DELETE"]
    assert [d["code"] for d in deletes] == [429, 200]
    # the server saw the retry no sooner than it asked for
    assert deletes[1]["time"] - deletes[0]["time"] >= 1.0


def test_503_is_retried(tmp_path: Path, api: ApiServer) -> None:
    api.cluster.fail_next("GET", POD_PATH, 503)
    api.cluster.fail_next("DELETE", POD_PATH, 503)
    (rec,) = respond(tmp_path, api, "[{delete_pod: {}}]")
    assert rec["outcome"] == "done", rec
    assert rec["retries"] == 2


def test_retries_are_bounded(tmp_path: Path, api: ApiServer) -> None:
    for _ in range(10):
        api.cluster.fail_next("DELETE", POD_PATH, 503)
    (rec,) = respond(tmp_path, api, "[{delete_pod: {}}]",
                     retry=RetryPolicy(attempts=3, max_seconds=5, initial_wait=0.01))
    assert rec["outcome"] == "failed" and "503" in rec["error"]
    assert len([r for r in api.cluster.requests if r["method"] == "DELETE"]) == 3


def test_404_and_409_count_as_done(tmp_path: Path, api: ApiServer) -> None:
    (gone,) = respond(tmp_path, api, "[{delete_pod: {}}]", alerts=[pod_alert(pod="nope-1")])
    assert gone["outcome"] == "noop" and "already gone" in gone["message"]
    api.cluster.fail_next("DELETE", POD_PATH, 404)  # vanished between GET and DELETE
    (raced,) = respond(tmp_path, api, "[{delete_pod: {}}]")
    assert raced["outcome"] == "noop"
    # another agent created the NetworkPolicy between our decision and our create: 409,
    # then a patch to our spec, and the response is done
    api.cluster.netpols[("prod", "enforcer-isolate")] = {
        "metadata": {"name": "enforcer-isolate", "namespace": "prod"},
        "spec": {"podSelector": {"matchLabels": {"enforcer.io/isolated": "true"}}}}
    api.cluster.requests.clear()
    (created,) = respond(tmp_path, api, "[{networkpolicy: {}}]")
    assert created["outcome"] == "done", created
    assert created["detail"]["networkpolicy"] == "patched"
    posts = [r for r in api.cluster.requests if r["path"] == NETPOLS_PATH]
    assert [(p["method"], p["code"]) for p in posts] == [("POST", 409)]
    assert api.cluster.netpols[("prod", "enforcer-isolate")]["spec"]["policyTypes"] == [
        "Ingress", "Egress"]


def test_a_request_without_the_token_is_refused(tmp_path: Path, api: ApiServer) -> None:
    kube = KubeAdapter.for_host(api.url)  # no token
    with pytest.raises(PermanentActionError, match="401"):
        kube.patch_pod("prod", "web-1", {"metadata": {"labels": {"x": "y"}}}, dry_run=False)
    (refused,) = api.cluster.requests
    assert refused["code"] == 401 and refused["authorization"] is None
    assert api.cluster.pods[("prod", "web-1")]["metadata"]["labels"] == {"app": "web"}
    # and the responder's calls carry it
    respond(tmp_path, api, "[{label_pod: {labels: {x: y}}}]")
    assert {r["authorization"] for r in api.cluster.requests[1:]} == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize(("call", "field"), [
    (lambda kube: kube.patch_pod("prod", "web-1", {"metadata": {"labels": {"x": "a b"}}},
                                 dry_run=False), "metadata.labels"),
    (lambda kube: kube.patch_pod("prod", "web-1", {"metadata": {"labels": {"-x": "y"}}},
                                 dry_run=True), "metadata.labels"),
    (lambda kube: kube.patch_node("node-a", {"spec": {"taints": [
        {"key": "k", "effect": "Sometimes"}]}}, dry_run=False), "spec.taints[0].effect"),
    (lambda kube: kube.apply_network_policy("prod", {
        "metadata": {"name": "bad"}, "spec": {"podSelector": {}, "ingress": [
            {"ports": [{"protocol": "TCP", "port": 70000}]}]}}, dry_run=False),
     "spec.ingress[0].ports[0].port"),
    (lambda kube: kube.apply_network_policy("prod", {
        "metadata": {"name": "bad"}, "spec": {"podSelector": {}, "egress": [
            {"to": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.1.0.0/24"]}}]}]}},
        dry_run=False), "spec.egress[0].to[0].ipBlock.except[0]"),
    (lambda kube: kube.apply_network_policy("prod", {
        "metadata": {"name": "bad"}, "spec": {"policyTypes": ["Ingress"]}}, dry_run=False),
     "spec.podSelector"),
])
def test_bodies_the_api_server_rejects_get_422(api: ApiServer, call: Any, field: str) -> None:
    kube = KubeAdapter.for_host(api.url, TOKEN)
    with pytest.raises(PermanentActionError, match="422") as refused:
        call(kube)
    (answer,) = api.cluster.requests
    assert answer["code"] == 422
    body = json.loads(refused.value.__cause__.body)  # type: ignore[union-attr]
    assert body["kind"] == "Status" and body["reason"] == "Invalid"
    assert field in body["message"]
    assert api.cluster.pods[("prod", "web-1")]["metadata"]["labels"] == {"app": "web"}
    assert api.cluster.nodes["node-a"]["spec"]["taints"] == [EXISTING_TAINT]
    assert not api.cluster.netpols


def test_protected_namespace_is_never_touched(tmp_path: Path, api: ApiServer) -> None:
    records = respond(tmp_path, api, "[{delete_pod: {}}, {label_pod: {labels: {x: y}}}, "
                                     "{networkpolicy: {}}]",
                      alerts=[pod_alert(namespace="kube-system", pod="coredns-1")])
    assert [(r["outcome"], r["guard"]) for r in records] == [
        ("suppressed", "protected-namespace")] * 3
    assert api.cluster.requests == [], "not even a GET"


def test_pods_on_other_nodes_are_refused(tmp_path: Path, api: ApiServer) -> None:
    (rec,) = respond(tmp_path, api, "[{delete_pod: {}}]", alerts=[pod_alert(pod="far-1")])
    assert rec["outcome"] == "suppressed" and rec["guard"] == "node"
    assert "node-b" in rec["reason"]
    assert api.cluster.mutations() == []
    (unset,) = respond(tmp_path, api, "[{delete_pod: {}}]", node_name=None)
    assert unset["outcome"] == "suppressed" and "NODE_NAME" in unset["reason"]
    assert ("prod", "web-1") in api.cluster.pods


def test_hostile_names_never_reach_the_api(tmp_path: Path, api: ApiServer) -> None:
    (rec,) = respond(tmp_path, api, "[{delete_pod: {}}]",
                     alerts=[pod_alert(pod="web-1/../../nodes/node-a")])
    assert rec["outcome"] == "suppressed" and rec["guard"] == "invalid-name"
    assert api.cluster.requests == []
