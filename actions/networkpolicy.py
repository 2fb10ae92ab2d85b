"""networkpolicy — isolate the matched pod cluster-wide and durably: label it, and
create (or patch) a NetworkPolicy in its namespace that selects that label and denies all
ingress and egress, except DNS (optional) and an allow-list of CIDRs/ports (forensics).

RBAC: pods: get, patch; networking.k8s.io networkpolicies: create, patch.

Only the pod that matched is isolated — not its whole workload — in both directions.
DNS egress goes only to the cluster's DNS pods: those labelled `dns_pod_selector` (default
k8s-app=kube-dns) in the namespaces labelled `dns_namespace_selector` (default
kubernetes.io/metadata.name=kube-system, the label the API server puts on every namespace),
never to a pod of that label in any namespace, which any tenant can create.
Idempotent: an existing NetworkPolicy (409) is patched to the same spec. Dry-run sends both
calls with dryRun=All. Undo: remove the label from the pod.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from actions.base import DONE, DRY_RUN, Action, Outcome, Params, Plan, param
from actions.context import ActionContext
from actions.label_pod import labels as _labels
from actions.pod_target import POD_FIELDS, pod_path, resolve_pod


def _cidrs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of CIDRs, got {value!r}")
    try:
        return tuple(str(ipaddress.ip_network(str(v), strict=False)) for v in value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def _ports(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in value):
        raise ValueError(f"expected a list of port numbers 1-65535, got {value!r}")
    return tuple(value)


def _selector(value: Any) -> str:
    selector_labels(value)
    return str(value)


def selector_labels(value: Any) -> dict[str, str]:
    """`key=value[,key=value]` (kubectl's -l form, equality only) as matchLabels."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected key=value[,key=value], got {value!r}")
    pairs = {}
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep or not key:
            raise ValueError(f"{item.strip()!r} is not key=value (in {value!r})")
        pairs[key.strip()] = val.strip()
    return _labels(pairs)


def _label_key(value: Any) -> str:
    _labels({value: "true"})
    return value


@dataclass(frozen=True)
class NetworkPolicyParams(Params):
    allow_dns: bool = param(True, doc="allow DNS (UDP/TCP 53) to the DNS pods in kube-system "
                                      "(see dns_pod_selector, dns_namespace_selector)")
    dns_pod_selector: str = param("k8s-app=kube-dns", parse=_selector,
                                  schema={"type": "string"},
                                  doc="labels of the DNS pods (key=value[,key=value])")
    dns_namespace_selector: str = param("kubernetes.io/metadata.name=kube-system",
                                        parse=_selector, schema={"type": "string"},
                                        doc="labels of the namespaces the DNS pods run in "
                                            "(key=value[,key=value])")
    allowed_cidrs: tuple[str, ...] = param((), parse=_cidrs,
                                           schema={"type": "array", "items": {"type": "string"}},
                                           doc="CIDRs still reachable both ways (forensics)")
    allowed_ports: tuple[int, ...] = param((), parse=_ports,
                                           schema={"type": "array", "items": {"type": "integer"}},
                                           doc="limit allowed_cidrs to these TCP ports")
    label: str = param("enforcer.io/isolated", parse=_label_key,
                       schema={"type": "string"}, doc="label put on the pod and selected")
    name: str = param("enforcer-isolate", doc="NetworkPolicy name")


class NetworkPolicy(Action):
    name = "networkpolicy"
    params_type = NetworkPolicyParams
    required_fields = POD_FIELDS
    target_fields = POD_FIELDS
    destructive = True
    rbac = ({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
             "verbs": ["create", "patch"]})
    example = "- networkpolicy: {allow_dns: true, allowed_cidrs: [10.99.0.0/24]}"
    params: NetworkPolicyParams

    def body(self, namespace: str) -> dict[str, Any]:
        """The NetworkPolicy: select the label; deny all but the allow-lists."""
        params = self.params
        ports = [{"protocol": "TCP", "port": p} for p in params.allowed_ports]
        egress: list[dict[str, Any]] = []
        ingress: list[dict[str, Any]] = []
        if params.allow_dns:
            egress.append({"to": [{"namespaceSelector": {
                                       "matchLabels": selector_labels(
                                           params.dns_namespace_selector)},
                                   "podSelector": {
                                       "matchLabels": selector_labels(
                                           params.dns_pod_selector)}}],
                           "ports": [{"protocol": "UDP", "port": 53},
                                     {"protocol": "TCP", "port": 53}]})
        if params.allowed_cidrs:
            blocks = [{"ipBlock": {"cidr": c}} for c in params.allowed_cidrs]
            egress.append({"to": blocks} | ({"ports": ports} if ports else {}))
            ingress.append({"from": blocks} | ({"ports": ports} if ports else {}))
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": params.name, "namespace": namespace,
                             "labels": {"app.kubernetes.io/managed-by": "enforcer"}},
                "spec": {"podSelector": {"matchLabels": {params.label: "true"}},
                         "policyTypes": ["Ingress", "Egress"],
                         "ingress": ingress, "egress": egress}}

    def plan(self, context: ActionContext) -> Plan:
        namespace, name, _pod = resolve_pod(context)
        label_patch = {"metadata": {"labels": {self.params.label: "true"}}}
        body = self.body(namespace)
        return Plan(action=self.name, target={"namespace": namespace, "pod": name},
                    render={"label": {"method": "PATCH", "path": pod_path(namespace, name),
                                      "body": label_patch},
                            "networkpolicy": {
                                "method": "POST (PATCH on 409)",
                                "path": f"/apis/networking.k8s.io/v1/namespaces/{namespace}"
                                        "/networkpolicies",
                                "body": body}},
                    summary=f"isolate pod {namespace}/{name} with NetworkPolicy "
                            f"{namespace}/{self.params.name}",
                    private={"kube": context.services.kube})

    def apply(self, plan: Plan, dry_run: bool) -> Outcome:
        kube = plan.private["kube"]
        namespace = plan.target["namespace"]
        # NetworkPolicy first: the label only isolates once something selects it.
        how = kube.apply_network_policy(namespace, plan.render["networkpolicy"]["body"], dry_run)
        kube.patch_pod(namespace, plan.target["pod"], plan.render["label"]["body"], dry_run)
        if dry_run:
            return Outcome(DRY_RUN, f"would {plan.summary} (the API server accepted "
                                    "dryRun=All)", {"networkpolicy": how})
        return Outcome(DONE, f"{plan.summary} (NetworkPolicy {how})", {"networkpolicy": how})


ACTION = NetworkPolicy
