"""Threat: any tenant can create a pod labelled k8s-app=kube-dns in its own namespace; an
isolated pod whose NetworkPolicy lets DNS out to that label in every namespace can talk to
it. The DNS egress names the DNS pods' namespace too (kube-system unless configured)."""

from __future__ import annotations

import pytest

from actions.base import ParamError
from actions.networkpolicy import NetworkPolicy, NetworkPolicyParams


def _dns_rule(raw: dict[str, object]) -> dict[str, object]:
    action = NetworkPolicy(NetworkPolicyParams.from_mapping(raw))
    (rule,) = [r for r in action.body("prod")["spec"]["egress"]
               if {"protocol": "UDP", "port": 53} in r.get("ports", [])]
    return rule


def test_dns_egress_only_to_kube_dns_in_kube_system() -> None:
    rule = _dns_rule({"allow_dns": True})
    assert rule["to"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert rule["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def test_configured_dns_selectors() -> None:
    rule = _dns_rule({"dns_namespace_selector": "kubernetes.io/metadata.name=dns",
                      "dns_pod_selector": "app.kubernetes.io/name=coredns,tier=node"})
    assert rule["to"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "coredns",
                                        "tier": "node"}}}]


def test_no_dns_rule_without_allow_dns() -> None:
    action = NetworkPolicy(NetworkPolicyParams.from_mapping({"allow_dns": False}))
    assert action.body("prod")["spec"]["egress"] == []


@pytest.mark.parametrize("bad", ["", "k8s-app", "=x", "a=b,,c=d", "bad key=x", 7])
def test_bad_selectors_are_refused(bad: object) -> None:
    with pytest.raises(ParamError, match="dns_pod_selector"):
        NetworkPolicyParams.from_mapping({"dns_pod_selector": bad})
