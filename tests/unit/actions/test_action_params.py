"""Every action's parameters are strict: unknown keys and wrong types fail at load time,
and each action's own example loads."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from actions import registry
from actions.base import ParamError, Refused
from actions.names import valid_ip, valid_namespace, valid_object_name


@pytest.mark.parametrize("name", registry.names())
def test_every_action_has_the_interface(name: str) -> None:
    action = registry.get(name)
    assert action.name == name
    assert action.__module__.startswith("actions.")
    doc = __import__(action.__module__, fromlist=["x"]).__doc__
    assert doc and "RBAC:" in doc, f"{name}: the module docstring must name its RBAC"
    assert dataclasses.is_dataclass(action.params_type)
    assert action.params_type.__dataclass_params__.frozen
    assert action.example
    (step,) = yaml.safe_load(action.example)
    (params,) = step.values()
    action.params_type.from_mapping(params)


@pytest.mark.parametrize("name", registry.names())
def test_unknown_parameters_are_rejected(name: str) -> None:
    with pytest.raises(ParamError, match="unknown parameter 'no_such_thing'"):
        registry.get(name).params_type.from_mapping({"no_such_thing": 1})


@pytest.mark.parametrize(("name", "params", "words"), [
    ("kill", {"signal": True}, "signal"),
    ("kill", {"scope": "cluster"}, "scope must be one of"),
    ("kill", {"in_kernel": "yes"}, "expected true or false"),
    ("delete_pod", {"grace_period": 1.5}, "expected an integer"),
    ("delete_pod", {"grace_period": -1}, "0 or more"),
    ("label_pod", {}, "missing required parameter 'labels'"),
    ("label_pod", {"labels": {"bad key!": "x"}}, "not a valid label key"),
    ("label_pod", {"labels": ["a"]}, "expected a mapping"),
    ("cordon", {"taint": {"key": "k", "effect": "Sometimes"}}, "effect must be one of"),
    ("networkpolicy", {"allowed_ports": [0]}, "port numbers"),
    ("networkpolicy", {"allowed_cidrs": "10.0.0.0/8"}, "list of CIDRs"),
    ("snapshot", {"paths": ["relative/path"]}, "must be absolute"),
    ("snapshot", {"paths": ["/tmp/../etc"]}, "'..'"),
    ("notify", {"url": "ftp://x"}, "http(s) URL"),
    ("notify", {}, "missing required parameter 'url'"),
    ("quarantine", {"allow_dns": 1}, "expected true or false"),
])
def test_wrong_types_and_values_are_rejected(name: str, params: dict, words: str) -> None:
    with pytest.raises(ParamError, match=words.replace("(", r"\(").replace(")", r"\)")):
        registry.get(name).params_type.from_mapping(params)


def test_params_are_frozen() -> None:
    params = registry.get("kill").params_type.from_mapping({"signal": "TERM"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.signal = "SIGKILL"  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["", "UPPER", "a/b", "../etc", "x" * 64, "-lead", "a b"])
def test_event_supplied_names_are_validated(bad: str) -> None:
    with pytest.raises(Refused):
        valid_namespace(bad)


def test_names_and_ips_that_are_fine_pass() -> None:
    assert valid_namespace("prod-1") == "prod-1"
    assert valid_object_name("web-7d4b9c.abc") == "web-7d4b9c.abc"
    assert valid_ip("10.0.0.1") == "10.0.0.1"
    with pytest.raises(Refused):
        valid_ip("10.0.0.1; rm -rf /")
    with pytest.raises(Refused):
        valid_object_name("pod/../../nodes")


def test_rbac_rules_cover_every_kubernetes_action() -> None:
    rules = {(r["apiGroups"][0], r["resources"][0]): r["verbs"] for r in registry.rbac_rules()}
    assert rules[("", "pods")] == ["delete", "get", "patch"]
    assert rules[("", "nodes")] == ["get", "patch"]
    assert rules[("networking.k8s.io", "networkpolicies")] == ["create", "patch"]
