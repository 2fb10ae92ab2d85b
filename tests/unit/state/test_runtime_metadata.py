"""Which runtime API answers for a container: the CRI first for containerd / cri-o cgroups,
the Docker API first for the others, the other one when the first does not know the
container or cannot be asked; a pod's sandbox is asked once for all its containers."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from enforcer.state.containers import ContainerInfo, ContainerRegistry
from enforcer.state.runtime_metadata import RuntimeAbsent, RuntimeMetadata
from tests.unit.state.eventually import eventually

CAPTURED = json.loads((Path(__file__).resolve().parents[2] / "data" / "cri" /
                       "containerd-1.6.20.json").read_text())
STATUS = CAPTURED["container_status"]
SANDBOX = CAPTURED["pod_sandbox_status"]
CID = STATUS["status"]["id"]
SID = SANDBOX["status"]["id"]
DOC = {"Id": CID, "Name": "/podman-name", "Config": {"Image": "localhost/x:1", "Labels": {}}}


class FakeCri:
    def __init__(self, containers: dict[str, Any], sandboxes: dict[str, Any],
                 error: OSError | None = None):
        self.containers, self.sandboxes, self.error = containers, sandboxes, error
        self.calls: list[tuple[str, str]] = []

    def container_status(self, container_id: str) -> dict[str, Any] | None:
        self.calls.append(("container", container_id))
        if self.error:
            raise self.error
        return self.containers.get(container_id)

    def pod_sandbox_status(self, sandbox_id: str) -> dict[str, Any] | None:
        self.calls.append(("sandbox", sandbox_id))
        if self.error:
            raise self.error
        return self.sandboxes.get(sandbox_id)


def docker_knows(docs: dict[str, Any], calls: list[str]):  # type: ignore[no-untyped-def]
    def inspect(full_id: str) -> dict[str, Any] | None:
        calls.append(full_id)
        return docs.get(full_id)
    return inspect


def absent() -> Any:
    raise RuntimeAbsent("no socket")


def described(reg: ContainerRegistry, cid: str = CID, runtime: str = "containerd"
              ) -> ContainerInfo:
    """The registry's answer once its background lookup is in (or the hold is over)."""
    eventually(lambda: not reg.pending(cid))
    return reg.get(cid, runtime)


def test_cri_first_for_a_containerd_cgroup() -> None:
    cri, docker_calls = FakeCri({CID: STATUS}, {SID: SANDBOX}), []
    lookup = RuntimeMetadata(docker=docker_knows({CID: DOC}, docker_calls), cri=lambda: cri)
    info = lookup(CID, "containerd")
    assert info is not None and info.name == "app" and info.runtime == "containerd"
    assert info.k8s_pod_labels == {"app": "web", "tier": "front"}
    assert docker_calls == []


def test_docker_first_for_a_podman_cgroup_then_cri() -> None:
    cri, docker_calls = FakeCri({CID: STATUS}, {SID: SANDBOX}), []
    lookup = RuntimeMetadata(docker=docker_knows({CID: DOC}, docker_calls), cri=lambda: cri)
    assert lookup(CID, "podman").name == "podman-name"  # type: ignore[union-attr]
    assert cri.calls == []
    unknown_to_docker = RuntimeMetadata(docker=docker_knows({}, []), cri=lambda: cri)
    assert unknown_to_docker(CID, "docker").name == "app"  # type: ignore[union-attr]


def test_sandbox_is_asked_once_per_pod() -> None:
    other = dict(STATUS, status=dict(STATUS["status"], id="e" * 64))
    cri = FakeCri({CID: STATUS, "e" * 64: other}, {SID: SANDBOX})
    lookup = RuntimeMetadata(cri=lambda: cri)
    lookup(CID, "containerd")
    lookup("e" * 64, "containerd")
    assert cri.calls.count(("sandbox", SID)) == 1


def test_a_pod_sandbox_container_is_named_after_its_pod() -> None:
    lookup = RuntimeMetadata(cri=lambda: FakeCri({}, {SID: SANDBOX}))
    info = lookup(SID, "containerd")
    assert info is not None and info.name == "web-1" and info.k8s_ns_name == "shop"


def test_unknown_everywhere_is_none_and_no_runtime_is_an_error() -> None:
    assert RuntimeMetadata(docker=docker_knows({}, []),
                           cri=lambda: FakeCri({}, {}))(CID, "containerd") is None
    with pytest.raises(RuntimeAbsent):
        RuntimeMetadata(docker=None, cri=absent)(CID, "containerd")
    # one API absent, the other not knowing the container: not an error, just unknown
    assert RuntimeMetadata(docker=None, cri=lambda: FakeCri({}, {}))(CID, "containerd") is None


def test_a_failing_cri_falls_back_to_docker_and_failures_are_reported() -> None:
    broken = FakeCri({}, {}, error=OSError("deadline exceeded"))
    lookup = RuntimeMetadata(docker=docker_knows({CID: DOC}, []), cri=lambda: broken)
    assert lookup(CID, "containerd").name == "podman-name"  # type: ignore[union-attr]
    with pytest.raises(OSError, match="deadline exceeded"):
        RuntimeMetadata(docker=docker_knows({}, []), cri=lambda: broken)(CID, "containerd")


def test_container_answer_kept_when_only_its_sandbox_fails() -> None:
    class SandboxDown(FakeCri):
        def pod_sandbox_status(self, sandbox_id: str) -> dict[str, Any] | None:
            raise OSError("sandbox lookup timed out")

    info = RuntimeMetadata(cri=lambda: SandboxDown({CID: STATUS}, {}))(CID, "containerd")
    assert info is not None and info.name == "app" and info.k8s_pod_name == "web-1"
    assert info.complete is False  # the registry asks again for the pod's labels


class SandboxLate(FakeCri):
    """The pod sandbox cannot be asked until `ready` is set."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.ready = threading.Event()

    def pod_sandbox_status(self, sandbox_id: str) -> dict[str, Any] | None:
        self.calls.append(("sandbox", sandbox_id))
        if not self.ready.is_set():
            raise OSError("sandbox lookup timed out")
        return super().pod_sandbox_status(sandbox_id)


def test_registry_completes_an_answer_that_lacked_its_sandbox() -> None:
    cri = SandboxLate({CID: STATUS}, {SID: SANDBOX})
    reg = ContainerRegistry(None, lookup=RuntimeMetadata(cri=lambda: cri),
                            retry_delays=(0.0,) + (0.01,) * 500)
    assert reg.get(CID, "containerd").pending  # asked in the background, not on this thread
    first = described(reg)
    # used at once (its events are not held for the pod's labels), completed later
    assert first.name == "app" and not first.pending and not reg.pending(CID)
    assert first.k8s_pod_labels == {} and not first.complete
    cri.ready.set()
    for _ in range(500):
        if reg.get(CID, "containerd").complete:
            break
        threading.Event().wait(0.01)
    assert reg.get(CID, "containerd").k8s_pod_labels == {"app": "web", "tier": "front"}


def test_registry_asks_again_for_an_incomplete_answer_after_a_pause() -> None:
    now = [100.0]
    cri = SandboxLate({CID: STATUS}, {SID: SANDBOX})
    reg = ContainerRegistry(None, lookup=RuntimeMetadata(cri=lambda: cri),
                            retry_delays=(0.0,), clock=lambda: now[0])
    reg.get(CID, "containerd")
    assert described(reg).name == "app"
    for _ in range(50):  # the round is over: its events do not each ask again
        reg.get(CID, "containerd")
    time.sleep(0.2)
    assert cri.calls == [("container", CID), ("sandbox", SID)]
    cri.ready.set()
    for _ in range(500):  # past the pause, an event starts a new round
        now[0] += 31
        if reg.get(CID, "containerd").complete:
            break
        time.sleep(0.01)
    assert reg.get(CID, "containerd").k8s_pod_labels == {"app": "web", "tier": "front"}


FORGED = "1 0 0:1 / / rw - overlay overlay rw,lowerdir=/l,upperdir=/forged,workdir=/w\n"


def _process(proc: Path, pid: int, mountinfo: str = FORGED) -> Path:
    """A fake /proc/PID: its root (a real directory) and its own mount table, which the
    process may have written itself (an overlay it mounted, upperdir= any string)."""
    root = proc.parent / f"rootfs-{pid}"
    root.mkdir(exist_ok=True)
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    (proc / str(pid) / "root").symlink_to(root)
    (proc / str(pid) / "mountinfo").write_text(mountinfo)
    return root


def _host_mount(proc: Path, root: Path, upper: str, fstype: str = "overlay") -> None:
    """A line of the host's mount table (PID 1's) mounting `root`, as a runtime does."""
    dev = root.stat().st_dev
    (proc / "1").mkdir(parents=True, exist_ok=True)
    if not (proc / "1" / "root").exists():
        (proc / "1" / "root").symlink_to("/")
    options = f"rw,lowerdir=/l,upperdir={upper},workdir=/w" if fstype == "overlay" else "rw"
    with open(proc / "1" / "mountinfo", "a") as fh:
        fh.write(f"900 22 {os.major(dev)}:{os.minor(dev)} / {root} rw - {fstype} x "
                 f"{options}\n")


def test_upper_dir_from_the_host_mount_that_is_the_first_process_root(tmp_path: Path) -> None:
    pid = json.loads(STATUS["info"]["info"])["pid"]
    proc = tmp_path / "proc"
    _host_mount(proc, _process(proc, pid), "/snap/7/fs")
    lookup = RuntimeMetadata(cri=lambda: FakeCri({CID: STATUS}, {SID: SANDBOX}),
                             proc_root=str(proc))
    assert lookup(CID, "containerd").upper_dir == "/snap/7/fs"  # type: ignore[union-attr]


def test_a_process_own_mount_table_never_names_the_upper_layer(tmp_path: Path) -> None:
    """Its upperdir= is whatever string the process gave its own overlay."""
    pid = json.loads(STATUS["info"]["info"])["pid"]
    proc = tmp_path / "proc"
    _process(proc, pid)
    lookup = RuntimeMetadata(cri=lambda: FakeCri({CID: STATUS}, {SID: SANDBOX}),
                             proc_root=str(proc))
    assert lookup(CID, "containerd").upper_dir is None  # type: ignore[union-attr]


def test_registry_over_the_runtime_lookup() -> None:
    reg = ContainerRegistry(None, lookup=RuntimeMetadata(
        cri=lambda: FakeCri({CID: STATUS}, {SID: SANDBOX})))
    assert reg.get(CID, "containerd").pending
    info = described(reg)
    assert info.name == "app" and reg.get(CID, "containerd") is info


def test_registry_finds_the_upper_layer_once_from_a_process_of_the_container(
        tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    reg = ContainerRegistry(None, lookup=RuntimeMetadata(
        cri=lambda: FakeCri({CID: STATUS}, {SID: SANDBOX}), proc_root=str(proc)))
    reg.get(CID, "containerd")
    info = described(reg)
    # the container's first process was not readable
    assert info.name == "app" and info.upper_dir is None
    # pid 10 is gone already; pid 15 chrooted into an overlay of its own (no host mount):
    # neither tells, and the next process of the container answers
    _process(proc, 15)
    _host_mount(proc, _process(proc, 20), "/snap/9/fs")
    assert reg.upper_dir(info, [10, 15, 20], str(proc)) == "/snap/9/fs"
    assert reg.get(CID, "containerd").upper_dir == "/snap/9/fs"
    # a later answer of the runtime (which does not give the layer) keeps it
    assert reg.prefetch(CID, refresh=True).upper_dir == "/snap/9/fs"  # type: ignore[union-attr]
    (proc / "1" / "mountinfo").unlink()
    assert reg.upper_dir(reg.get(CID, "containerd"), [20], str(proc)) == "/snap/9/fs"


def test_a_forged_root_neither_names_nor_hides_the_layer(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    reg = ContainerRegistry(None, lookup=RuntimeMetadata(
        cri=lambda: FakeCri({CID: STATUS}, {SID: SANDBOX}), proc_root=str(proc)))
    reg.get(CID, "containerd")
    info = described(reg)
    _process(proc, 15)
    assert reg.upper_dir(info, [15], str(proc)) is None
    _host_mount(proc, _process(proc, 20), "/snap/9/fs")
    assert reg.upper_dir(info, [20], str(proc)) == "/snap/9/fs"  # nothing was remembered


def test_registry_remembers_a_root_that_is_no_overlay(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    reg = ContainerRegistry(None, lookup=RuntimeMetadata(
        cri=lambda: FakeCri({CID: STATUS}, {SID: SANDBOX}), proc_root=str(proc)))
    reg.get(CID, "containerd")
    info = described(reg)
    root = _process(proc, 30)
    _host_mount(proc, root, "", fstype="btrfs")
    assert reg.upper_dir(info, [30], str(proc)) is None
    (proc / "1" / "mountinfo").unlink()
    _host_mount(proc, root, "/x/fs")
    assert reg.upper_dir(info, [30], str(proc)) is None  # not looked for again


def test_upper_dir_from_the_hosts_mount_of_the_container_rootfs(tmp_path: Path) -> None:
    """containerd mounts the root file system at <bundle>/rootfs (root.path "rootfs" in the
    captured spec) before the container's first process exists."""
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "mountinfo").write_text(
        "22 1 254:1 / / rw - ext4 /dev/vda rw\n"
        f"900 22 0:80 / /run/containerd/io.containerd.runtime.v2.task/k8s.io/{'d' * 64}/rootfs"
        " rw - overlay overlay rw,lowerdir=/l,upperdir=/snap/other/fs,workdir=/w\n"
        f"901 22 0:81 / /run/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/rootfs"
        " rw - overlay overlay rw,lowerdir=/l,upperdir=/snap/12/fs,workdir=/w\n")
    no_pid = dict(STATUS, info={"info": json.dumps({**json.loads(STATUS["info"]["info"]),
                                                    "pid": 0})})
    lookup = RuntimeMetadata(cri=lambda: FakeCri({CID: no_pid}, {SID: SANDBOX}),
                             proc_root=str(tmp_path))
    assert lookup(CID, "containerd").upper_dir == "/snap/12/fs"  # type: ignore[union-attr]
