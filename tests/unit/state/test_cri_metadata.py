"""CRI answers mapped to Falco's container.* and k8s.* fields.

tests/data/cri/containerd-1.6.20.json holds real answers of containerd 1.6.20 (Debian 12),
captured through enforcer.adapters.cri from pods made by tests/system/cri_driver.py: pod web-1
in namespace shop (labels app=web, tier=front) with container `app` mounting /srv/www on
/data read-only, and the privileged pod debug-1 in ops with container `shell`. The other
shapes (cri-o, image references by digest) follow the fields Falco's CRI engine reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from enforcer.state.cri_metadata import (
    container_pid,
    image_fields,
    info_from_container_status,
    info_from_sandbox_status,
    privileged,
    rootfs_mount,
    sandbox_id,
    verbose_info,
)
from enforcer.state.overlay import overlay_upper_dir

CAPTURED = json.loads((Path(__file__).resolve().parents[2] / "data" / "cri" /
                       "containerd-1.6.20.json").read_text())
STATUS = CAPTURED["container_status"]
SANDBOX = CAPTURED["pod_sandbox_status"]
CID = STATUS["status"]["id"]


def test_captured_container_with_its_sandbox() -> None:
    info = info_from_container_status(CID, STATUS, SANDBOX, "containerd")
    assert info.id == CID[:12] and info.full_id == CID and info.runtime == "containerd"
    assert info.name == "app"
    assert info.image == "localhost/enforcer-busybox:test"
    assert (info.image_repository, info.image_tag) == ("localhost/enforcer-busybox", "test")
    assert info.image_id == STATUS["status"]["image_ref"].removeprefix("sha256:")
    assert info.privileged is False
    assert info.mounts == ({"source": "/srv/www", "dest": "/data", "mode": "", "rw": False,
                            "propagation": "private"},)
    assert info.k8s_pod_name == "web-1" and info.k8s_ns_name == "shop"
    assert info.k8s_pod_uid == SANDBOX["status"]["metadata"]["uid"]
    assert info.k8s_pod_labels == {"app": "web", "tier": "front"}
    assert info.start_ts == int(STATUS["status"]["started_at"])


def test_captured_verbose_info() -> None:
    assert sandbox_id(STATUS) == SANDBOX["status"]["id"]
    assert isinstance(container_pid(STATUS), int)
    assert verbose_info({"info": {"info": "not json"}}) == {}
    assert verbose_info({}) == {}


def test_captured_privileged_container() -> None:
    answer = CAPTURED["privileged_container_status"]
    info = info_from_container_status(answer["status"]["id"], answer,
                                      CAPTURED["privileged_pod_sandbox_status"], "containerd")
    assert info.privileged is True
    assert info.name == "shell" and info.k8s_ns_name == "ops" and info.k8s_pod_name == "debug-1"
    assert info.k8s_pod_labels == {}


def test_container_without_its_sandbox_keeps_its_own_labels() -> None:
    info = info_from_container_status(CID, STATUS, None, "containerd")
    assert info.k8s_pod_name == "web-1" and info.pod_labels is None
    assert info.k8s_pod_labels == {}  # the container's labels are all the kubelet's own


def test_pod_identity_from_the_sandbox_when_the_container_lacks_the_labels() -> None:
    bare = {"status": {**STATUS["status"], "labels": {}}, "info": STATUS["info"]}
    info = info_from_container_status(CID, bare, SANDBOX)
    assert (info.k8s_pod_name, info.k8s_ns_name) == ("web-1", "shop")
    assert info.k8s_pod_uid == SANDBOX["status"]["metadata"]["uid"]


def test_captured_sandbox_as_its_own_container() -> None:
    sid = SANDBOX["status"]["id"]
    info = info_from_sandbox_status(sid, SANDBOX, "containerd")
    assert info.id == sid[:12] and info.name == "web-1"
    assert info.k8s_pod_name == "web-1" and info.k8s_ns_name == "shop"
    assert info.k8s_pod_labels == {"app": "web", "tier": "front"}


def _status(image: str, image_ref: str) -> dict[str, Any]:
    return {"image": {"image": image}, "image_ref": image_ref}


@pytest.mark.parametrize(("status", "info", "expected"), [
    # containerd: image.image is the name the kubelet asked for, image_ref the image id
    (_status("registry.local:5000/shop/web:1.2", "sha256:aa11"), {},
     ("registry.local:5000/shop/web:1.2", "registry.local:5000/shop/web", "1.2", "aa11")),
    # cri-o: image_ref is repo@digest; the tag comes from image.image
    (_status("quay.io/shop/web:1.2", "quay.io/shop/web@sha256:bb22"), {},
     ("quay.io/shop/web:1.2", "quay.io/shop/web", "1.2", None)),
    # only ids in the status: the name from the OCI spec's annotations
    (_status("sha256:cc33", "sha256:cc33"),
     {"runtimeSpec": {"annotations": {"io.kubernetes.cri.image-name": "nginx:1.27"}}},
     ("nginx:1.27", "nginx", "1.27", "cc33")),
    (_status("sha256:cc33", "sha256:cc33"),
     {"runtimeSpec": {"annotations": {"io.kubernetes.cri-o.ImageName": "docker.io/x/y:2"}}},
     ("docker.io/x/y:2", "docker.io/x/y", "2", "cc33")),
    (_status("sha256:cc33", "sha256:cc33"), {}, (None, None, None, "cc33")),
    (_status("busybox", ""), {}, ("busybox", "busybox", "latest", None)),
])
def test_image_fields(status: dict[str, Any], info: dict[str, Any],
                      expected: tuple[str | None, ...]) -> None:
    assert image_fields(status, info) == expected


@pytest.mark.parametrize(("info", "expected"), [
    ({"config": {"linux": {"security_context": {"privileged": True}}}}, True),  # containerd
    ({"runtimeSpec": {"linux": {"security_context": {"privileged": True}}}}, True),  # older
    ({"privileged": True}, True),  # cri-o
    ({"privileged": False}, False),
    ({"config": {"linux": {"security_context": {}}}}, False),
    ({}, False),
])
def test_privileged(info: dict[str, Any], expected: bool) -> None:
    assert privileged(info) is expected


def test_mount_propagation_names() -> None:
    status = {"mounts": [{"host_path": "/a", "container_path": "/b",
                          "propagation": "PROPAGATION_BIDIRECTIONAL"},
                         {"host_path": "/c", "container_path": "/d",
                          "propagation": "PROPAGATION_HOST_TO_CONTAINER", "readonly": True}]}
    info = info_from_container_status("f" * 64, {"status": status})
    assert [(m["propagation"], m["rw"]) for m in info.mounts] == [("rshared", True),
                                                                  ("rslave", False)]


def test_overlay_upper_dir_of_the_root_mount() -> None:
    mountinfo = (
        "1000 900 0:52 / / rw,relatime - ext4 /dev/vda rw\n"
        "1001 900 0:53 / / ro,relatime master:1 - overlay overlay rw,lowerdir=/l/1/fs,"
        "upperdir=/var/lib/containerd/snapshots/12/fs,workdir=/var/lib/containerd/"
        "snapshots/12/work\n"
        "1002 1001 0:54 / /proc rw,nosuid - proc proc rw\n")
    assert overlay_upper_dir(mountinfo) == "/var/lib/containerd/snapshots/12/fs"
    assert overlay_upper_dir("1000 900 0:52 / / rw - ext4 /dev/vda rw\n") is None


def test_rootfs_mount_point_from_the_oci_spec() -> None:
    containerd = rootfs_mount(CID, verbose_info(STATUS))
    assert containerd is not None
    assert containerd(f"/run/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/rootfs")
    assert not containerd(f"/run/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/x")
    crio = rootfs_mount(CID, {"runtimeSpec": {"root": {"path": "/var/lib/containers/storage/"
                                                              "overlay/ab12/merged"}}})
    assert crio is not None and crio("/var/lib/containers/storage/overlay/ab12/merged")
    assert rootfs_mount(CID, {}) is None
