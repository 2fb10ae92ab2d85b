"""The optional ValidatingAdmissionPolicy: whatever the ClusterRole grants, the agent's
service account updates or deletes only pods on its own node and its own Node. Threat: a
stolen agent token (root on one node reads it from the agent's pod) used to delete pods or
cordon nodes elsewhere in the cluster.

The chart is rendered with real helm; the policy's CEL (match condition, variables,
validation, message) is compiled and evaluated with cel-python against admission requests
shaped as the API server builds them; the objects are checked against the Kubernetes
schemas."""

from __future__ import annotations

from typing import Any

import celpy
import kubernetes_validate
import pytest

from tests.unit.chart.chart_render import KUBE_VERSION, HelmError, one, render

AGENT = "system:serviceaccount:security:rel-enforcer"
NODE_KEY = "authentication.kubernetes.io/node-name"
ON = {"admissionPolicy": {"enabled": True}}


@pytest.fixture(scope="module")
def policy(kube_tools, tmp_path_factory) -> dict[str, Any]:
    objects = render(kube_tools, tmp_path_factory.mktemp("vap"), ON)
    for obj in objects:  # the Kubernetes schemas of the version rendered for
        if obj["kind"].startswith("ValidatingAdmissionPolicy"):
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    binding = one(objects, "ValidatingAdmissionPolicyBinding")
    found = one(objects, "ValidatingAdmissionPolicy")
    assert binding["spec"] == {"policyName": found["metadata"]["name"],
                               "validationActions": ["Deny"]}
    return found


def _evaluate(expression: str, activation: dict[str, Any]) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expression)).evaluate(activation)


def admit(policy: dict[str, Any], user: str, node: str | None, resource: str,
          target: dict[str, Any]) -> tuple[bool, str]:
    """(allowed, message) for a DELETE of `target` by `user` whose token names `node`."""
    spec = policy["spec"]
    request: dict[str, Any] = {
        "operation": "DELETE", "name": target["metadata"]["name"],
        "resource": {"group": "", "version": "v1", "resource": resource},
        "userInfo": {"username": user} | ({"extra": {NODE_KEY: [node]}} if node else {})}
    activation = {"request": celpy.json_to_cel(request),
                  "oldObject": celpy.json_to_cel(target), "object": celpy.json_to_cel(None)}
    if not all(_evaluate(c["expression"], activation) for c in spec["matchConditions"]):
        return True, "not the agent"
    variables = {}
    for var in spec["variables"]:
        variables[var["name"]] = _evaluate(
            var["expression"], activation | {"variables": celpy.json_to_cel(variables)})
    activation["variables"] = celpy.json_to_cel(variables)
    (rule,) = spec["validations"]
    allowed = bool(_evaluate(rule["expression"], activation))
    return allowed, str(_evaluate(rule["messageExpression"], activation))


def pod(node: str | None) -> dict[str, Any]:
    spec = {"nodeName": node} if node else {}
    return {"metadata": {"name": "web-1", "namespace": "prod"}, "spec": spec}


def node_object(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {}}


def test_the_policy_covers_pod_and_node_changes(policy: dict[str, Any]) -> None:
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert set(rule["operations"]) == {"UPDATE", "DELETE"}
    assert set(rule["resources"]) == {"pods", "nodes"}
    assert policy["spec"]["failurePolicy"] == "Fail"


def test_own_node_is_allowed(policy: dict[str, Any]) -> None:
    assert admit(policy, AGENT, "node-a", "pods", pod("node-a"))[0]
    assert admit(policy, AGENT, "node-a", "nodes", node_object("node-a"))[0]


def test_another_node_is_refused(policy: dict[str, Any]) -> None:
    allowed, message = admit(policy, AGENT, "node-a", "pods", pod("node-b"))
    assert not allowed
    assert message == ("the enforcer agent of node node-a may change only its own node and "
                       "the pods on it, not pods web-1 on node-b")
    assert not admit(policy, AGENT, "node-a", "nodes", node_object("node-b"))[0]
    assert not admit(policy, AGENT, "node-a", "pods", pod(None))[0]  # not scheduled


def test_a_token_without_a_node_is_refused(policy: dict[str, Any]) -> None:
    allowed, message = admit(policy, AGENT, None, "pods", pod("node-a"))
    assert not allowed and "carries no node name" in message


def test_other_users_are_not_matched(policy: dict[str, Any]) -> None:
    other = "system:serviceaccount:security:someone-else"
    assert admit(policy, other, None, "pods", pod("node-b")) == (True, "not the agent")


def test_off_by_default_and_refused_before_1_30(kube_tools, tmp_path) -> None:
    kinds = {o["kind"] for o in render(kube_tools, tmp_path)}
    assert not kinds & {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    with pytest.raises(HelmError, match="needs Kubernetes >= 1.30"):
        render(kube_tools, tmp_path, ON, "1.29.0")
