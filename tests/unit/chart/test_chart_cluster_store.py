"""The chart's cluster store: agents get the writer DSN from one Secret, the console
(Deployment + Service) its DSN and token from others, the migrations run as a hook Job; with
the store left local nothing about PostgreSQL is rendered or required."""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests.unit.chart.chart_render import KUBE_VERSION, HelmError, env_of, render

CLUSTER = {
    "store": {"postgresql": {"enabled": True, "writerSecret": "enforcer-writer",
                             "migrate": {"enabled": True, "adminSecret": "enforcer-admin",
                                         "retentionDays": 14, "writerRole": "agents",
                                         "readerRole": "console"}}},
    "console": {"enabled": True, "dsnSecret": "enforcer-reader",
                "tokenSecret": "enforcer-console-token"},
}


def _kinds(objects: list[dict]) -> list[tuple[str, str]]:
    return sorted((o["kind"], o["metadata"]["name"]) for o in objects)


def test_local_store_needs_nothing_about_postgresql(kube_tools, tmp_path):
    objects = render(kube_tools, tmp_path)
    assert env_of(objects)["ENFORCER_STORE"] == "/var/lib/enforcer/audit/audit.db"
    assert "ENFORCER_STORE_SPOOL" not in env_of(objects)
    assert not [o for o in objects if "console" in o["metadata"]["name"]
                or o["kind"] == "Job"]


def test_agents_get_the_writer_dsn_from_its_secret(kube_tools, tmp_path):
    objects = render(kube_tools, tmp_path, CLUSTER)
    env = env_of(objects)
    assert env["ENFORCER_STORE"] == {"secretKeyRef": {"name": "enforcer-writer", "key": "dsn"}}
    # The spool sits beside the audit log, on the host: it outlives an agent restart.
    assert env["ENFORCER_STORE_SPOOL"] == "/var/lib/enforcer/audit/store-spool.db"


def test_console_deployment_and_service(kube_tools, tmp_path):
    objects = render(kube_tools, tmp_path, CLUSTER)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (console,) = pod["containers"]
    assert console["args"][:1] == ["ui"] and "0.0.0.0:8765" in console["args"]
    env = {e["name"]: e["valueFrom"] for e in console["env"]}
    assert env["ENFORCER_STORE"] == {"secretKeyRef": {"name": "enforcer-reader", "key": "dsn"}}
    assert env["ENFORCER_UI_TOKEN"]["secretKeyRef"]["name"] == "enforcer-console-token"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert console["securityContext"]["readOnlyRootFilesystem"] is True
    service = next(o for o in objects if o["kind"] == "Service"
                   and o["metadata"]["name"].endswith("-console"))
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    # The agents' DaemonSet and metrics Service never select the console's pods.
    daemonset = next(o for o in objects if o["kind"] == "DaemonSet")
    agent_selector = daemonset["spec"]["selector"]["matchLabels"]
    console_labels = pod and deployment["spec"]["template"]["metadata"]["labels"]
    assert not all(console_labels.get(k) == v for k, v in agent_selector.items())


def test_migrations_run_as_a_hook_job(kube_tools, tmp_path):
    objects = render(kube_tools, tmp_path, CLUSTER)
    job = next(o for o in objects if o["kind"] == "Job")
    assert "pre-install" in job["metadata"]["annotations"]["helm.sh/hook"]
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["store", "migrate", "--retention-days", "14",
                               "--grant-writer", "agents", "--grant-reader", "console"]
    assert migrate["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "enforcer-admin"


def test_cluster_objects_validate_against_kubernetes_schemas(kube_tools, tmp_path):
    for obj in render(kube_tools, tmp_path, CLUSTER):
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            continue
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values, message", [
    ({"console": {"enabled": True, "tokenSecret": "t"}}, "console.dsnSecret"),
    ({"console": {"enabled": True, "dsnSecret": "d"}}, "console.tokenSecret"),
    ({"store": {"postgresql": {"enabled": True}}}, "store.postgresql.writerSecret"),
    ({"store": {"postgresql": {"enabled": True, "writerSecret": "w",
                               "migrate": {"enabled": True}}}},
     "store.postgresql.migrate.adminSecret"),
])
def test_missing_secrets_are_named(kube_tools, tmp_path, values, message):
    with pytest.raises(HelmError, match=message.replace(".", r"\.")):
        render(kube_tools, tmp_path, values)
