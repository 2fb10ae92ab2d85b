"""Container identity from cgroup paths; anything unknown is the host."""

from __future__ import annotations

import pytest

from enforcer.state.cgroups import identify

ID = "127a8590207428f1c575b1d4646d8239c264dc1afc2272c463f3f5f5cf152076"


@pytest.mark.parametrize(("text", "runtime"), [
    (f"12:memory:/docker/{ID}", "docker"),
    (f"0::/system.slice/docker-{ID}.scope", "docker"),
    (f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678_"
     f"90ab_cdef_1234567890ab.slice/cri-containerd-{ID}.scope", "containerd"),
    (f"0::/kubepods.slice/kubepods-pod11111111_2222_3333_4444_555555555555.slice/crio-{ID}"
     f".scope", "cri-o"),
    (f"4:memory:/libpod_parent/libpod-{ID}", "podman"),
    (f"0::/machine.slice/libpod-{ID}.scope/container", "podman"),
    (f"11:cpu:/kubepods/besteffort/pod8d6e6c2a-1b3c-4c1e-9d2f-0a1b2c3d4e5f/{ID}", "containerd"),
])
def test_container_runtimes(text: str, runtime: str) -> None:
    ident = identify(text)
    assert ident.runtime == runtime
    assert ident.full_id == ID
    assert ident.container_id == ID[:12]


@pytest.mark.parametrize("text", [
    "4:memory:/process_api/27643ff48b3f78855c0ff595e9135dbc",
    "0::/",
    "0::/user.slice/user-0.slice/session-1.scope",
    f"0::/machine.slice/libpod-conmon-{ID}.scope",
    f"0::/weird/{ID}",
    "",
])
def test_unknown_patterns_are_the_host(text: str) -> None:
    ident = identify(text)
    assert ident.container_id == "host" and ident.full_id == ""


def test_pod_uid_from_kubepods_path() -> None:
    ident = identify("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd"
                     f"_5678_90ab_cdef_1234567890ab.slice/cri-containerd-{ID}.scope")
    assert ident.pod_uid == "1234abcd-5678-90ab-cdef-1234567890ab"


# /proc/PID/cgroup of a container that containerd 1.6.20's CRI (runc, cgroupfs driver, no
# systemd) started on this project's hybrid cgroup hosts, under the kubelet-style parent
# /kubepods/besteffort/pod<uid> (tests/system/cri_driver.py): every hierarchy, the unified
# one (0::) included, ends in the bare 64-hex container id.
CONTAINERD_CRI = "\n".join(
    f"{n}:{c}:/kubepods/besteffort/pod60685df8-1ad7-4143-b928-b52f03aa13d3/"
    "e4114c89f977b97848d8879b1acc37c509f612e084bff6458de4ef5d44e2ecea"
    for n, c in ((9, "name=systemd"), (8, "pids"), (7, "blkio"), (6, "freezer"),
                 (5, "devices"), (4, "memory"), (3, "cpuset"), (2, "cpuacct"), (1, "cpu"),
                 (0, "")))


@pytest.mark.parametrize("text", [CONTAINERD_CRI, CONTAINERD_CRI.splitlines()[-1]])
def test_containerd_cri_cgroupfs_as_produced_here(text: str) -> None:
    ident = identify(text)
    assert ident.runtime == "containerd"
    assert ident.full_id == "e4114c89f977b97848d8879b1acc37c509f612e084bff6458de4ef5d44e2ecea"
    assert ident.container_id == "e4114c89f977"
    assert ident.pod_uid == "60685df8-1ad7-4143-b928-b52f03aa13d3"
