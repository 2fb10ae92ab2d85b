"""Container metadata: Docker-API answers mapped to Falco fields; lookups never block the
event path twice."""

from __future__ import annotations

import threading
import time

import pytest

from enforcer.state.containers import ContainerRegistry, info_from_inspect, split_image
from tests.unit.state.eventually import eventually

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


def test_registry_never_looks_up_on_the_callers_thread_and_retries_after_failures() -> None:
    callers: list[str] = []
    gate = threading.Event()

    def inspect(cid: str):  # type: ignore[no-untyped-def]
        callers.append(threading.current_thread().name)
        if not gate.is_set():
            raise OSError("runtime down")
        return DOC

    reg = ContainerRegistry(inspect, hold=60, retry_delays=(0.0,) + (0.05,) * 100)
    first = reg.get(CID)
    assert first.name is None and first.id == CID[:12] and first.pending
    assert reg.pending(CID)
    assert eventually(lambda: len(callers) >= 2)
    assert threading.current_thread().name not in callers
    n = len(callers)
    assert reg.get(CID).name is None
    gate.set()
    assert eventually(lambda: reg.get(CID).name == "web-1-app")
    assert not reg.pending(CID) and not reg.get(CID).pending
    assert len(callers) <= n + 2  # one background loop per id, not one per event


def test_registry_first_sight_is_filled_in_the_background() -> None:
    reg = ContainerRegistry(lambda cid: DOC)
    reg.get(CID)
    assert eventually(lambda: reg.get(CID, "podman").name == "web-1-app")
    assert reg.get(CID).runtime == "podman"
    assert reg.get("").id == "host" and not reg.get("").pending


def test_unknown_container_and_no_runtime_stop_being_pending() -> None:
    asked: list[str] = []

    def inspect(cid: str) -> None:
        asked.append(cid)  # the runtime: no such container

    reg = ContainerRegistry(inspect)
    reg.get(CID)
    assert eventually(lambda: not reg.pending(CID))
    assert reg.get(CID).name is None and not reg.get(CID).pending
    for _ in range(50):  # its later events do not each ask the runtime again
        reg.get(CID)
    time.sleep(0.2)
    assert len(asked) == 1
    nothing = ContainerRegistry(None)  # no runtime API at all
    assert not nothing.get(CID).pending


def test_pending_lasts_at_most_the_hold() -> None:
    now = [100.0]
    reg = ContainerRegistry(lambda cid: (_ for _ in ()).throw(OSError("slow")), hold=2.0,
                            retry_delays=(0.0,), clock=lambda: now[0])
    assert reg.get(CID).pending
    now[0] += 1.9
    assert reg.pending(CID)
    now[0] += 0.2
    assert not reg.pending(CID) and not reg.get(CID).pending


def test_prefetch_falls_back_on_the_event_attributes_when_the_container_is_gone() -> None:
    reg = ContainerRegistry(lambda cid: None)
    attrs = {"name": "web-1-app", "image": "localhost/shop/web:1.2", "containerExitCode": "0",
             "podId": "", "io.kubernetes.pod.name": "web-1",
             "io.kubernetes.pod.namespace": "shop", "app": "web"}
    info = reg.prefetch(CID, attrs)
    assert info is not None and reg.get(CID) is info and not reg.pending(CID)
    assert info.name == "web-1-app" and info.image_repository == "localhost/shop/web"
    assert info.image_tag == "1.2" and info.k8s_pod_name == "web-1"
    assert info.k8s_ns_name == "shop" and info.k8s_pod_labels == {"app": "web"}
    assert info.privileged is None  # only the runtime's inspect says


def test_prefetch_keeps_what_it_has_when_a_refresh_finds_nothing() -> None:
    docs = [DOC]
    reg = ContainerRegistry(lambda cid: docs[0])
    assert reg.prefetch(CID, {"name": "x"}).name == "web-1-app"
    docs[0] = None  # gone by its start event
    assert reg.prefetch(CID, {"name": "x"}, refresh=True).name == "web-1-app"
