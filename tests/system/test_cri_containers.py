"""Containers run through the CRI of a real containerd (as the kubelet runs them): the live
agent's alerts carry their identity from the cgroup path and their metadata from the CRI
(container name, image, pod, namespace, pod uid and labels, mounts, privileged)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from enforcer.resources import default_rules_dir
from tests.system.agent_harness import LiveAgent
from tests.system.containerd import IMAGE, Containerd

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

RULE = "Read sensitive file untrusted"


@pytest.fixture(scope="module")
def agent(ebpf_ready: None, containerd_cri: Containerd) -> Iterator[LiveAgent]:
    live = LiveAgent([str(default_rules_dir())], cri_socket=containerd_cri.socket)
    yield live
    live.close()


def test_read_sensitive_file_in_a_cri_pod(agent: LiveAgent, containerd_cri: Containerd,
                                          tmp_path: Path) -> None:
    driver = containerd_cri.driver
    assert driver is not None
    pod = driver.run_pod("web-1", "shop", labels={"app": "web", "tier": "front"})
    cid = driver.start_container(pod, "app", IMAGE, ["sh", "-c", "cat /etc/shadow; sleep 1"],
                                 mounts=[(str(tmp_path), "/data", True)])
    a = agent.wait(RULE, lambda a: a.event.get("container.id") == cid[:12])
    ev = a.event
    assert ev.get("proc.name") == "cat" and ev.get("fd.name") == "/etc/shadow"
    assert ev.get("container.id") == cid[:12] and ev.get("container.full_id") == cid
    assert ev.get("container.type") == "containerd"
    assert ev.get("container.name") == "app"
    assert ev.get("container.image") == IMAGE
    assert ev.get("container.image.repository") == "localhost/enforcer-busybox"
    assert ev.get("container.image.tag") == "test"
    assert ev.get("k8s.pod.name") == "web-1" and ev.get("k8s.ns.name") == "shop"
    assert ev.get("k8s.pod.uid") == pod.uid
    assert ev.get("k8s.pod.labels") == "app:web, tier:front"
    assert ev.get("k8s.pod.label[tier]") == "front"
    assert ev.get("container.privileged") is False
    assert ev.get("container.mounts") == f"{tmp_path}:/data::false:private"
    # by the other end, as Falco: the destination of a source, the source of a destination
    assert ev.get(f"container.mount.dest[{tmp_path}]") == "/data"
    assert ev.get("container.mount.dest[/data]") is None
    assert ev.get("container.mount.source[/da*]") == str(tmp_path)
    assert ev.get("container.mount.dest[0]") == "/data"


def test_privileged_cri_container(agent: LiveAgent, containerd_cri: Containerd) -> None:
    driver = containerd_cri.driver
    assert driver is not None
    pod = driver.run_pod("debug-1", "ops", privileged=True)
    cid = driver.start_container(pod, "shell", IMAGE, ["sh", "-c", "cat /etc/shadow; sleep 1"],
                                 privileged=True)
    ev = agent.wait(RULE, lambda a: a.event.get("container.id") == cid[:12]).event
    assert ev.get("container.privileged") is True
    assert ev.get("container.name") == "shell" and ev.get("k8s.ns.name") == "ops"


def test_drop_and_execute_new_binary_in_a_cri_container(agent: LiveAgent,
                                                        containerd_cri: Containerd) -> None:
    """proc.is_exe_upper_layer needs the container's writable layer on the host, which the
    CRI does not give: it is read from the container process's root mount."""
    driver = containerd_cri.driver
    assert driver is not None
    pod = driver.run_pod("build-1", "ci")
    dropped = driver.start_container(
        pod, "dropper", IMAGE, ["sh", "-c", "cp /bin/busybox /tmp/dropped; /tmp/dropped true"])
    a = agent.wait("Drop and execute new binary in container",
                   lambda a: a.event.get("container.id") == dropped[:12])
    assert a.event.get("proc.exepath") == "/tmp/dropped"
    assert a.event.get("proc.is_exe_upper_layer") is True
    assert a.event.get("k8s.pod.name") == "build-1"
    near = driver.start_container(pod, "image-binary", IMAGE, ["/bin/busybox", "true"])
    agent.barrier()
    assert not agent.find("Drop and execute new binary in container",
                          lambda a: a.event.get("container.id") == near[:12])


def test_doctor_reports_the_cri_runtime(containerd_cri: Containerd, enforcer_cmd: list[str],
                                        cli_env: dict[str, str]) -> None:
    res = subprocess.run([*enforcer_cmd, "doctor", "--cri-socket", containerd_cri.socket],
                         capture_output=True, text=True, env=cli_env, timeout=120, check=False)
    assert f"ok   CRI runtime API: {containerd_cri.socket} answers: containerd 1." in res.stdout
    assert "Traceback" not in res.stderr
