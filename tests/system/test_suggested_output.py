"""Every alert names its workload, as Falco 0.44 with its shipped falco.yaml does
(`append_output: [{suggested_output: true}]`): the real agent (CLI, default options, the
bundled rules), a read of /etc/shadow on the host and in a podman container labelled as a
Kubernetes pod; the text, output_fields and the console's list say where it happened."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.agent_process import AgentProcess
from tests.conftest import REPO
from tests.system.conftest import podman_run, require_ebpf

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

RULE = "Read sensitive file untrusted"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    require_ebpf()
    work = tmp_path_factory.mktemp("suggested")
    audit, store = work / "audit.jsonl", work / "audit.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(REPO)
    argv = [sys.executable, "-m", "enforcer", "--dry-run", "--audit-log", str(audit),
            "--store", str(store), "--ui", "--http-addr", "127.0.0.1:0"]
    proc = AgentProcess(argv, env, work, audit)
    try:
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, proc.stderr[-3000:]


def _alert(agent: AgentProcess, pred: Any, what: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((a for a in agent.alerts() if a["rule"] == RULE and pred(a)), None)

    return agent.wait(what, find, timeout=60)


def test_on_the_host_the_container_fields_say_host(agent: AgentProcess) -> None:
    marker = f"/tmp/enforcer-suggested-{uuid.uuid4().hex[:10]}"
    subprocess.run(["sh", "-c", f"cat /etc/shadow {marker} >/dev/null 2>&1; true"],
                   check=False)
    alert = _alert(agent, lambda a: marker in (a["output_fields"].get("proc.cmdline") or ""),
                   f"the alert for {marker}")
    fields = alert["output_fields"]
    assert fields["container.id"] == "host" and fields["container.name"] == "host"
    assert fields["k8s.pod.name"] is None and fields["k8s.ns.name"] is None
    assert alert["output"].endswith(
        " container_id=host container_name=host container_image_repository=<NA> "
        "container_image_tag=<NA> k8s_pod_name=<NA> k8s_ns_name=<NA>")


def test_in_a_pod_the_alert_and_the_console_name_it(agent: AgentProcess,
                                                    podman_ready: None) -> None:
    tag = uuid.uuid4().hex[:6]
    name, pod, ns = f"i14-web-{tag}", f"web-{tag}", f"shop-{tag}"
    res = podman_run("sh", "-c", "cat /etc/shadow; sleep 1", name=name,
                     labels={"io.kubernetes.pod.name": pod,
                             "io.kubernetes.pod.namespace": ns,
                             "io.kubernetes.pod.uid": str(uuid.uuid4()),
                             "io.kubernetes.container.name": "app"})
    assert res.returncode == 0, res.stderr
    alert = _alert(agent, lambda a: a["output_fields"].get("container.name") == name,
                   f"the alert from {name}")
    fields = alert["output_fields"]
    cid = fields["container.id"]
    assert len(cid) == 12 and cid != "host"
    assert fields["container.image.repository"] == "localhost/enforcer-busybox"
    assert fields["container.image.tag"] == "test"
    assert fields["k8s.pod.name"] == pod and fields["k8s.ns.name"] == ns
    assert alert["output"].endswith(
        f" container_id={cid} container_name={name} "
        "container_image_repository=localhost/enforcer-busybox container_image_tag=test "
        f"k8s_pod_name={pod} k8s_ns_name={ns}")

    def listed(query: str) -> str | None:
        status, page = agent.get(f"/ui/?{query}")
        assert status == 200, page
        return page if 'class="detection"' in page else None

    for query in (f"container={quote(name)}", f"pod={pod}&namespace={ns}"):
        page = agent.wait(f"the console's list for {query}", lambda q=query: listed(q))
        assert f"{ns}/{pod}" in page and f'<span class="container">{name}</span>' in page
    assert listed(f"container=i14-nothing-{tag}") is None
