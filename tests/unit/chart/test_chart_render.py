"""The Helm chart, rendered by a real helm and checked against the Kubernetes schemas.

`kubectl apply --dry-run=client` is not used: even client-side it asks an API server for
discovery and the OpenAPI schema (it fails with "connection refused" when none is reachable),
so the objects are validated offline with kubernetes-validate's strict schemas instead.
"""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from actions import registry
from tests.conftest import REPO
from tests.unit.chart.chart_render import (
    CHART,
    KUBE_VERSION,
    OLDEST_KUBE_VERSION,
    HelmError,
    container,
    env_of,
    helm,
    one,
    render,
)

# Chart value key (actions.<key>.enabled) -> the action's name in policies and its registry.
AGENT_NAMES = {
    "kill": "kill", "deletePod": "delete_pod", "labelPod": "label_pod", "cordon": "cordon",
    "networkpolicy": "networkpolicy", "quarantine": "quarantine", "snapshot": "snapshot",
    "notify": "notify",
}
# Nothing is read from the API server but the targets of pod actions (no list/watch: the
# agent takes pod identity from the container runtime's labels).
ALWAYS: set[tuple[str, str, str]] = set()
EVENTS = {("", "events", "create")}


def _declared_rbac(name: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) that the action module declares it needs (`rbac`)."""
    return {(group, resource, verb)
            for rule in registry.get(name).rbac
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]}


# What each action needs from the API server, from the actions' own declarations; kill,
# quarantine, snapshot and notify are node-local and need none.
ACTION_RBAC = {key: _declared_rbac(name) for key, name in AGENT_NAMES.items()}

EXAMPLE_POLICY = [{
    "policy": "contain-shell-in-prod",
    "match": {"rules": ["Terminal shell in container"], "priority": ">=notice"},
    "actions": [{"networkpolicy": {"allow_dns": True}}, {"delete_pod": {"grace_period": 0}}],
    "dry_run": False,
}]


def flag_values(args: list[str], flag: str) -> list[str]:
    """The arguments after `flag` up to the next option."""
    start = args.index(flag) + 1
    end = next((i for i in range(start, len(args)) if args[i].startswith("--")), len(args))
    return args[start:end]


def disabled(*actions: str) -> dict[str, Any]:
    return {"actions": {a: {"enabled": False} for a in actions}}


def granted(objects: list[dict]) -> set[tuple[str, str, str]]:
    role = one(objects, "ClusterRole")
    return {(group, resource, verb)
            for rule in role["rules"] or []
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]}


def needed(disabled_actions: set[str], events: bool = True) -> set[tuple[str, str, str]]:
    need = set(ALWAYS) | (EVENTS if events else set())
    for action, rbac in ACTION_RBAC.items():
        if action not in disabled_actions:
            need |= rbac
    return need


SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    **{f"without-{a}": disabled(a) for a in ACTION_RBAC},
    "all-actions-disabled": {**disabled(*ACTION_RBAC), "kubernetesEvents": {"enabled": False}},
    "inline-policies-and-rules": {
        "policies": {"inline": {"contain.yaml": EXAMPLE_POLICY}},
        "rules": {"inline": {"local_rules.yaml": "- list: shell_binaries\n  items: [sh]\n"
                                                  "  override:\n    items: append\n"}},
    },
    "existing-configmaps": {"policies": {"existingConfigMap": "gitops-policies"},
                            "rules": {"existingConfigMap": "gitops-rules", "bundled": False}},
    "privileged": {"privileged": True},
    "enforcing": {"dryRun": False},
    "otel-and-monitoring": {
        "otel": {"endpoint": "http://otel-collector.observability:4317",
                 "headersSecret": "otel-auth"},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    },
    "ui": {"ui": {"enabled": True, "tokenSecret": "enforcer-ui"}},
    "no-rbac-no-serviceaccount": {"rbac": {"create": False},
                                  "serviceAccount": {"create": False, "name": "existing"}},
}


def test_helm_lint_passes_strict(kube_tools):
    out = helm(kube_tools, "lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_helm_lint_passes_with_every_action_disabled(kube_tools, tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump(SCENARIOS["all-actions-disabled"]))
    out = helm(kube_tools, "lint", "--strict", str(CHART), "--values", str(values))
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("kube_version", [KUBE_VERSION, OLDEST_KUBE_VERSION])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_objects_validate_against_kubernetes_schemas(kube_tools, tmp_path, scenario,
                                                              kube_version):
    objects = render(kube_tools, tmp_path, SCENARIOS[scenario], kube_version)
    assert any(o["kind"] == "DaemonSet" for o in objects)
    for obj in objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a CRD: no upstream schema; checked in test_service_monitor_*
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {path}: {exc.message}")


def test_every_action_has_a_values_switch():
    assert set(AGENT_NAMES.values()) == set(registry.names())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["actions"]) == set(AGENT_NAMES)
    assert ACTION_RBAC["networkpolicy"]  # the table is really read from the action modules


def test_install_dry_run_notes_say_whether_the_agent_enforces(kube_tools):
    """`helm install --dry-run=client` works offline: it renders the chart and its notes."""
    out = helm(kube_tools, "install", "rel", str(CHART), "--dry-run=client", "-n", "security")
    notes = out.split("NOTES:", 1)[1]
    assert "DRY-RUN: responses are audited, never performed" in notes
    assert "Enabled actions: cordon,delete_pod,kill,label_pod,networkpolicy" in notes
    out = helm(kube_tools, "install", "rel", str(CHART), "--dry-run=client", "-n", "security",
               "--set", "dryRun=false")
    assert "ENFORCING: policies whose dry_run is false act" in out.split("NOTES:", 1)[1]


def test_default_cluster_role_holds_exactly_what_the_actions_need(kube_tools, tmp_path):
    assert granted(render(kube_tools, tmp_path)) == needed(set())


@pytest.mark.parametrize("action", ACTION_RBAC)
def test_disabling_an_action_removes_exactly_its_rbac(kube_tools, tmp_path, action):
    full = granted(render(kube_tools, tmp_path))
    without = granted(render(kube_tools, tmp_path, disabled(action)))
    assert without == needed({action})
    others = set().union(*(r for a, r in ACTION_RBAC.items() if a != action))
    exclusive = ACTION_RBAC[action] - others
    assert full - without == exclusive
    if exclusive:
        assert len(without) < len(full)


def test_pods_patch_goes_only_when_both_label_and_networkpolicy_are_disabled(kube_tools, tmp_path):
    verbs = granted(render(kube_tools, tmp_path, disabled("labelPod", "networkpolicy")))
    assert ("", "pods", "patch") not in verbs
    assert verbs == needed({"labelPod", "networkpolicy"})


def test_all_disabled_leaves_no_access(kube_tools, tmp_path):
    objects = render(kube_tools, tmp_path, SCENARIOS["all-actions-disabled"])
    assert one(objects, "ClusterRole")["rules"] == []
    assert env_of(objects)["ENFORCER_ENABLED_ACTIONS"] == ""


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_cluster_role_has_no_wildcard(kube_tools, tmp_path, scenario):
    objects = render(kube_tools, tmp_path, SCENARIOS[scenario])
    for role in (o for o in objects if o["kind"] in ("ClusterRole", "Role")):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in rule.get(key, []), f"wildcard in {key} of {rule}"
                assert not any("*" in item for item in rule.get(key, []) if item)


def test_binding_grants_the_role_to_the_agent_service_account(kube_tools, tmp_path):
    objects = render(kube_tools, tmp_path)
    binding = one(objects, "ClusterRoleBinding")
    account = one(objects, "ServiceAccount")
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": one(objects, "ClusterRole")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": "security",
                                    "name": account["metadata"]["name"]}]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_daemonset_runs_dry_run_by_default(kube_tools, tmp_path):
    args = container(render(kube_tools, tmp_path))["args"]
    assert "--dry-run" in args
    assert args[args.index("--http-addr") + 1] == "0.0.0.0:9376"
    assert args[args.index("--node-name") + 1] == "$(NODE_NAME)"
    # no custom rules or policies: the agent uses the ones bundled in the image
    assert "--rules" not in args and "--policies" not in args


def test_dry_run_false_enforces(kube_tools, tmp_path):
    assert "--dry-run" not in container(render(kube_tools, tmp_path, {"dryRun": False}))["args"]


def test_daemonset_runs_on_every_node_with_host_pid(kube_tools, tmp_path):
    objects = render(kube_tools, tmp_path)
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert {"operator": "Exists"} in pod["tolerations"]
    assert "nodeSelector" not in pod


def test_capabilities_by_default_and_privileged_switch(kube_tools, tmp_path):
    ctx = container(render(kube_tools, tmp_path))["securityContext"]
    assert ctx["privileged"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert set(ctx["capabilities"]["add"]) == {
        "BPF", "PERFMON", "SYS_ADMIN", "SYS_RESOURCE", "KILL", "NET_ADMIN", "SYS_PTRACE",
        "SYS_NICE"}
    ctx = container(render(kube_tools, tmp_path, {"privileged": True}))["securityContext"]
    assert ctx["privileged"] is True
    assert "capabilities" not in ctx


def test_runtime_default_seccomp(kube_tools, tmp_path):
    ctx = container(render(kube_tools, tmp_path))["securityContext"]
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}


def test_apparmor_field_from_1_30_annotation_before(kube_tools, tmp_path):
    objects = render(kube_tools, tmp_path)
    assert container(objects)["securityContext"]["appArmorProfile"] == {"type": "Unconfined"}
    assert "annotations" not in one(objects, "DaemonSet")["spec"]["template"]["metadata"]
    objects = render(kube_tools, tmp_path, {"podAnnotations": {"team": "sec"}}, "1.29.0")
    assert "appArmorProfile" not in container(objects)["securityContext"]
    annotations = one(objects, "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"team": "sec",
                           "container.apparmor.security.beta.kubernetes.io/enforcer": "unconfined"}


DOCKER = {"containerRuntime": {"sockets": {"docker": "/var/run/docker.sock"}}}


def test_host_mounts(kube_tools, tmp_path):
    objects = render(kube_tools, tmp_path, DOCKER)
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container(objects)["volumeMounts"]}
    host = {path: v["hostPath"]["path"] for path, v in mounts.items() if "hostPath" in v}
    assert host == {
        "/sys/kernel/tracing": "/sys/kernel/tracing",
        "/sys/kernel/debug": "/sys/kernel/debug",
        "/lib/modules": "/lib/modules",
        "/usr/src": "/usr/src",
        "/host/proc": "/proc",
        "/host/var/run/docker.sock": "/var/run/docker.sock",
        "/host/run/containerd": "/run/containerd",
        "/host/run/crio": "/run/crio",
        "/var/lib/enforcer/audit": "/var/lib/enforcer/audit",
        "/var/lib/enforcer/snapshots": "/var/lib/enforcer/snapshots",
        "/run/enforcer": "/run/enforcer",
    }
    read_only = {m["mountPath"] for m in container(objects)["volumeMounts"] if m.get("readOnly")}
    assert {"/lib/modules", "/usr/src", "/host/proc", "/host/run/containerd",
            "/host/var/run/docker.sock"} <= read_only
    # the Docker socket sits in the host's /var/run with every other service's: only the
    # socket itself is mounted, and the pod starts only where it is a socket
    assert volumes["runtime-docker"]["hostPath"]["type"] == "Socket"
    assert volumes["runtime-containerd"]["hostPath"]["type"] == "DirectoryOrCreate"
    assert not any(path in ("/var/run", "/run", "/") for path in host.values())
    assert not {"/var/lib/enforcer/snapshots", "/run/enforcer"} & read_only
    env = env_of(objects)
    assert env["ENFORCER_CONTAINER_SOCKET"] == "/host/var/run/docker.sock"
    assert env["ENFORCER_CRI_SOCKET"] == (
        "/host/run/containerd/containerd.sock:/host/run/crio/crio.sock")
    assert env["ENFORCER_AUDIT_LOG"] == "/var/lib/enforcer/audit/audit.jsonl"
    assert env["ENFORCER_STORE"] == "/var/lib/enforcer/audit/audit.db"
    assert env["ENFORCER_SNAPSHOT_DIR"] == "/var/lib/enforcer/snapshots"
    assert env["ENFORCER_STATE_DIR"] == "/run/enforcer"


def test_no_docker_socket_by_default(kube_tools, tmp_path):
    objects = render(kube_tools, tmp_path)
    names = {v["name"] for v in one(objects, "DaemonSet")["spec"]["template"]["spec"]["volumes"]}
    assert "runtime-docker" not in names and "runtime-containerd" in names
    assert "ENFORCER_CONTAINER_SOCKET" not in env_of(objects)


def test_runtime_sockets_follow_values(kube_tools, tmp_path):
    values = {"containerRuntime": {"sockets": {"docker": None,
                                               "podman": "/run/podman/podman.sock"}}}
    objects = render(kube_tools, tmp_path, values)
    names = {v["name"] for v in one(objects, "DaemonSet")["spec"]["template"]["spec"]["volumes"]}
    assert {"runtime-containerd", "runtime-crio", "runtime-podman"} <= names
    assert "runtime-docker" not in names
    assert env_of(objects)["ENFORCER_CONTAINER_SOCKET"] == "/host/run/podman/podman.sock"
    values["containerRuntime"]["sockets"]["docker"] = "/var/run/docker.sock"
    env = env_of(render(kube_tools, tmp_path, values))
    assert env["ENFORCER_CONTAINER_SOCKET"] == (
        "/host/var/run/docker.sock:/host/run/podman/podman.sock")
    assert env["ENFORCER_CRI_SOCKET"] == (
        "/host/run/containerd/containerd.sock:/host/run/crio/crio.sock")
    values["containerRuntime"]["sockets"] = {"docker": "", "podman": "", "crio": None}
    objects = render(kube_tools, tmp_path, values)
    assert "ENFORCER_CONTAINER_SOCKET" not in env_of(objects)
    assert env_of(objects)["ENFORCER_CRI_SOCKET"] == "/host/run/containerd/containerd.sock"
    values["containerRuntime"]["sockets"]["containerd"] = ""
    assert "ENFORCER_CRI_SOCKET" not in env_of(render(kube_tools, tmp_path, values))


@pytest.mark.parametrize(("setting", "quarantine", "expected"), [
    ("auto", True, True), ("auto", False, False), (True, False, True), (False, True, False)])
def test_host_network_follows_quarantine_unless_set(kube_tools, tmp_path, setting, quarantine,
                                                    expected):
    values = {"hostNetwork": setting, "actions": {"quarantine": {"enabled": quarantine}}}
    pod = one(render(kube_tools, tmp_path, values), "DaemonSet")["spec"]["template"]["spec"]
    assert pod.get("hostNetwork", False) is expected
    assert pod.get("dnsPolicy") == ("ClusterFirstWithHostNet" if expected else None)


def test_guard_settings_reach_the_agent(kube_tools, tmp_path):
    env = env_of(render(kube_tools, tmp_path))
    assert (env["ENFORCER_BREAKER_WORKLOADS"], env["ENFORCER_BREAKER_WINDOW"],
            env["ENFORCER_BREAKER_COOLOFF"]) == ("5", "10m", "10m")
    assert "ENFORCER_ACTION_BUDGET" not in env  # deprecated: only passed on when set
    assert "ENFORCER_PROTECTED_NAMESPACES" not in env
    values = {"protectedNamespaces": ["payments", "vault"], "actionBudget": 5,
              "breaker": {"workloads": 2, "window": "1h", "cooloff": "30m"}}
    env = env_of(render(kube_tools, tmp_path, values))
    assert env["ENFORCER_PROTECTED_NAMESPACES"] == "payments,vault"
    assert env["ENFORCER_ACTION_BUDGET"] == "5"  # the agent warns that it ignores it
    assert (env["ENFORCER_BREAKER_WORKLOADS"], env["ENFORCER_BREAKER_WINDOW"],
            env["ENFORCER_BREAKER_COOLOFF"]) == ("2", "1h", "30m")


def test_the_chart_breaker_reaches_the_agents_limits(kube_tools, tmp_path):
    from enforcer.respond.options import breaker_defaults, deprecation_warnings
    from tests.unit.chart.test_chart_agent_args import parse_like_the_pod

    values = {"breaker": {"workloads": 2, "window": "1h", "cooloff": "30m"},
              "actionBudget": 5}
    args = parse_like_the_pod(container(render(kube_tools, tmp_path, values)))
    limits = breaker_defaults(args)
    assert (limits.workloads, limits.window, limits.cooloff) == (2, 3600.0, 1800.0)
    assert deprecation_warnings(args) and "actionBudget" in deprecation_warnings(args)[0]


def test_probes_and_resources(kube_tools, tmp_path):
    agent = container(render(kube_tools, tmp_path))
    assert agent["ports"] == [{"name": "metrics", "containerPort": 9376, "protocol": "TCP"}]
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert agent["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert set(agent["resources"]) == {"requests", "limits"}
    assert agent["resources"]["limits"]["memory"]


def test_downward_api_env(kube_tools, tmp_path):
    env = env_of(render(kube_tools, tmp_path))
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert set(env["ENFORCER_ENABLED_ACTIONS"].split(",")) == set(AGENT_NAMES.values())
    assert not any(name.startswith("OTEL_") for name in env)
    assert "ENFORCER_UI" not in env


@pytest.mark.parametrize("action", ACTION_RBAC)
def test_disabled_action_is_told_to_the_agent(kube_tools, tmp_path, action):
    env = env_of(render(kube_tools, tmp_path, disabled(action)))
    assert set(env["ENFORCER_ENABLED_ACTIONS"].split(",")) == (
        set(AGENT_NAMES.values()) - {AGENT_NAMES[action]})


def test_inline_policies_become_a_mounted_config_map(kube_tools, tmp_path):
    objects = render(kube_tools, tmp_path, SCENARIOS["inline-policies-and-rules"])
    maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    assert set(maps) == {"rel-enforcer-policies", "rel-enforcer-rules"}
    assert yaml.safe_load(maps["rel-enforcer-policies"]["data"]["contain.yaml"]) == EXAMPLE_POLICY
    rules = yaml.safe_load(maps["rel-enforcer-rules"]["data"]["local_rules.yaml"])
    assert rules[0]["list"] == "shell_binaries"
    args = container(objects)["args"]
    assert args[args.index("--policies") + 1] == "/etc/enforcer/policies"
    # one --rules (nargs="+"; a second --rules would replace the first), bundled rules first,
    # then the extra files that may override them
    assert args.count("--rules") == 1
    assert flag_values(args, "--rules") == ["/usr/share/enforcer/rules", "/etc/enforcer/rules"]
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["policies"]["configMap"]["name"] == "rel-enforcer-policies"
    mount = next(m for m in container(objects)["volumeMounts"] if m["name"] == "policies")
    assert mount["mountPath"] == "/etc/enforcer/policies"
    assert "subPath" not in mount  # a subPath mount never sees ConfigMap updates


def test_inline_policy_text_is_kept_verbatim(kube_tools, tmp_path):
    text = (REPO / "docs/gitops/example/policies/contain.yaml").read_text()
    objects = render(kube_tools, tmp_path, {"policies": {"inline": {"contain.yaml": text}}})
    cm = one(objects, "ConfigMap")
    assert cm["data"]["contain.yaml"] == text.strip()


def test_existing_config_maps_are_referenced_not_rendered(kube_tools, tmp_path):
    objects = render(kube_tools, tmp_path, SCENARIOS["existing-configmaps"])
    assert not [o for o in objects if o["kind"] == "ConfigMap"]
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["policies"]["configMap"]["name"] == "gitops-policies"
    assert volumes["rules"]["configMap"]["name"] == "gitops-rules"
    args = container(objects)["args"]
    assert flag_values(args, "--rules") == ["/etc/enforcer/rules"]


def test_otel_endpoint_values(kube_tools, tmp_path):
    env = env_of(render(kube_tools, tmp_path, SCENARIOS["otel-and-monitoring"]))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert env["OTEL_SERVICE_NAME"] == "enforcer"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"] == {
        "secretKeyRef": {"name": "otel-auth", "key": "headers"}}
    assert "k8s.node.name=$(NODE_NAME)" in env["OTEL_RESOURCE_ATTRIBUTES"]


def test_metrics_service_and_service_monitor_select_the_agent(kube_tools, tmp_path):
    objects = render(kube_tools, tmp_path, SCENARIOS["otel-and-monitoring"])
    service = one(objects, "Service")
    monitor = one(objects, "ServiceMonitor")
    pod_labels = one(objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["security"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert not [o for o in render(kube_tools, tmp_path) if o["kind"] == "ServiceMonitor"]


def test_ui_is_off_by_default_and_needs_a_token(kube_tools, tmp_path):
    env = env_of(render(kube_tools, tmp_path, SCENARIOS["ui"]))
    assert env["ENFORCER_UI"] == "true"
    assert env["ENFORCER_UI_TOKEN"] == {"secretKeyRef": {"name": "enforcer-ui", "key": "token"}}
    with pytest.raises(HelmError, match="ui.enabled needs ui.tokenSecret"):
        render(kube_tools, tmp_path, {"ui": {"enabled": True}})


def test_no_rules_at_all_is_refused_with_an_explanation(kube_tools, tmp_path):
    with pytest.raises(HelmError, match="rules.bundled is false but no rules are given"):
        render(kube_tools, tmp_path, {"rules": {"bundled": False}})


@pytest.mark.parametrize(("values", "message"), [
    ({"actions": {"deletepod": {"enabled": False}}},
     "at '/actions': additional properties 'deletepod' not allowed"),
    ({"dryrun": False}, "additional properties 'dryrun' not allowed"),
    ({"hostNetwork": "maybe"}, "at '/hostNetwork'"),
    ({"protectedNamespaces": ["Not_A_Namespace"]}, "at '/protectedNamespaces/0'"),
    ({"snapshots": {"hostPath": "relative/dir"}}, "at '/snapshots/hostPath'"),
])
def test_misspelt_or_wrong_values_are_refused_not_ignored(kube_tools, tmp_path, values, message):
    """values.schema.json: a typo must not silently leave an action enabled."""
    with pytest.raises(HelmError, match=re.escape(message)):
        render(kube_tools, tmp_path, values)


def test_service_monitor_without_service_is_refused(kube_tools, tmp_path):
    values = {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}
    with pytest.raises(HelmError, match="needs metrics.service.enabled"):
        render(kube_tools, tmp_path, values)


# Values that are Kubernetes objects passed through as a whole are documented as one entry.
OPAQUE_VALUES = {"resources", "seccompProfile", "appArmorProfile", "updateStrategy"}


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the documented values: maps are walked, anything else is a leaf."""
    if isinstance(node, dict) and node and prefix not in OPAQUE_VALUES:
        paths = []
        for key, value in node.items():
            paths += _leaf_paths(value, f"{prefix}.{key}" if prefix else key)
        return paths
    return [prefix]


def test_every_value_is_documented_in_the_readme_and_values_file():
    raw = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(raw)
    readme = (CHART / "README.md").read_text().split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.M))
    leaves = set(_leaf_paths(values))
    assert leaves - documented == set(), "values missing from charts/enforcer/README.md"
    assert documented - leaves == set(), "README documents values that do not exist"
    # every value carries a comment right above it in values.yaml
    commented: set[str] = set()
    stack: list[tuple[int, str]] = []
    lines = raw.splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z]\w*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        if number and lines[number - 1].strip().startswith("#"):
            commented.add(".".join(key for _, key in stack))
    assert leaves - commented == set(), "values without a comment in values.yaml"
