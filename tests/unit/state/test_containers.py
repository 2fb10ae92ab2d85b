"""Container metadata: Docker-API answers mapped to Falco fields; lookups never block the
event path twice."""

from __future__ import annotations

import threading

import pytest

from enforcer.state.containers import ContainerRegistry, info_from_inspect, split_image

CID = "ea059ccb4bf6d73ddcd52a085630d88559c496a3f845676e82a3ceaaec9c21c7"
DOC = {
    "Id": CID, "Name": "/web-1-app", "Image": "sha256:abc",
    "Config": {"Image": "registry.local:5000/shop/web:1.2",
               "Labels": {"io.kubernetes.pod.name": "web-1",
                          "io.kubernetes.pod.namespace": "shop",
                          "io.kubernetes.pod.uid": "u-1", "app": "web"}},
    "HostConfig": {"Privileged": True},
    "State": {"StartedAt": "2026-11-23T16:14:30.005413753Z"},
    "Mounts": [{"Source": "/srv", "Destination": "/data", "Mode": "", "RW": True,
                "Propagation": "rprivate"}],
}


@pytest.mark.parametrize(("image", "repo", "tag"), [
    ("busybox", "busybox", "latest"),
    ("localhost/enforcer-busybox:test", "localhost/enforcer-busybox", "test"),
    ("registry.local:5000/shop/web:1.2", "registry.local:5000/shop/web", "1.2"),
    ("registry.local:5000/shop/web", "registry.local:5000/shop/web", "latest"),
    ("nginx@sha256:0123", "nginx", None),
])
def test_split_image(image: str, repo: str, tag: str | None) -> None:
    assert split_image(image) == (repo, tag)


def test_info_from_inspect() -> None:
    info = info_from_inspect(CID, DOC, "podman")
    assert info.id == CID[:12] and info.name == "web-1-app"
    assert info.image_repository == "registry.local:5000/shop/web" and info.image_tag == "1.2"
    assert info.privileged is True
    assert info.k8s_pod_name == "web-1" and info.k8s_ns_name == "shop"
    assert info.k8s_pod_uid == "u-1" and info.k8s_pod_labels == {"app": "web"}
    assert info.start_ts == 1795450470005413753
    assert info.mounts[0]["dest"] == "/data"


def test_registry_caches_and_does_not_block_again_after_a_failure() -> None:
    calls: list[str] = []
    gate = threading.Event()

    def inspect(cid: str):  # type: ignore[no-untyped-def]
        calls.append(cid)
        if not gate.is_set():
            raise OSError("runtime down")
        return DOC

    reg = ContainerRegistry(inspect, retry_delays=(0.05,) * 100)
    first = reg.get(CID)
    assert first.name is None and first.id == CID[:12]
    n = len(calls)
    assert reg.get(CID).name is None
    assert len(calls) <= n + 1  # the second event did not make its own blocking lookup
    gate.set()
    for _ in range(200):
        if reg.get(CID).name == "web-1-app":
            break
        threading.Event().wait(0.02)
    assert reg.get(CID).name == "web-1-app"


def test_registry_success_on_first_sight() -> None:
    reg = ContainerRegistry(lambda cid: DOC)
    assert reg.get(CID).name == "web-1-app"
    assert reg.get("").id == "host"
