"""Threat: root in a container, with user namespaces allowed and no seccomp filter (the
Kubernetes defaults), makes a mount namespace of its own, mounts an overlay whose `upperdir=`
names a path that, on the host, is a directory the agent can read, chroots into it and trips
a snapshot rule. The overlay's options in the process's own /proc/PID/mountinfo are strings
the attacker chose: an agent that opens them from its own root archives host files.

The snapshot must hold none of the host directory's files, and the container's real upper
layer (where a dropped binary lands) must still be found for a process that did not forge
anything."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.process import read_stat
from enforcer.state.overlay import trusted_upper_dir
from tests.conftest import require
from tests.system.images import PODMAN, RUN_LIMITS, ensure_busybox_image, podman_available
from tests.system.test_response_snapshot import alert_for, respond

pytestmark = [pytest.mark.root, pytest.mark.podman]

CANARY = f"host-canary-{uuid.uuid4().hex}".encode()


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _find(exe: str, under: int, deadline: float) -> int:
    """A `sleep` below `under` whose executable's path ends with `exe` (breadth first)."""
    while time.monotonic() < deadline:
        todo = [under]
        while todo:
            pid = todo.pop(0)
            stat = read_stat(pid)
            if stat is not None and stat.comm == "sleep" and _exe(pid).endswith(exe):
                return pid
            try:
                todo += [int(c) for c in
                         Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no sleep running {exe} below {under}")


@pytest.fixture
def forged(need_root: None, tmp_path: Path) -> Iterator[dict[str, Any]]:
    require(podman_available(), "podman or busybox-static missing",
            "apt-get install podman runc busybox-static (scripts/setup.sh does)")
    image = ensure_busybox_image()
    # on the host: a directory with a secret, at the path the attacker will name as upperdir
    base = tmp_path / "forged"
    (base / "up").mkdir(parents=True)
    (base / "up" / "canary.txt").write_bytes(CANARY)
    name = f"enf-forge-{uuid.uuid4().hex[:8]}"
    # inside: a user + mount namespace, a tmpfs at the same path string, an overlay with
    # upperdir= that string, and a chroot into it; the container's own shell drops a binary
    # into the container's real upper layer and waits
    inner = (f"mount -t tmpfs t {base} && mkdir -p {base}/up {base}/work {base}/low/bin /m "
             f"&& cp /bin/busybox {base}/low/bin/ && ln -s busybox {base}/low/bin/sleep "
             f"&& echo inside > {base}/up/mine "
             f"&& mount -t overlay o -o lowerdir={base}/low,upperdir={base}/up,"
             f"workdir={base}/work /m && exec chroot /m /bin/sleep 120")
    script = (f"mkdir -p {base}; cp /bin/busybox /tmp/sleep; "
              f"unshare -Urm sh -c '{inner}' & /tmp/sleep 120; true")
    run = subprocess.run(PODMAN + ["run", "-d", "--name", name, "--security-opt",
                                   "seccomp=unconfined"] + RUN_LIMITS +
                         [image, "sh", "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    cid = run.stdout.strip()
    try:
        doc = json.loads(subprocess.run(PODMAN + ["inspect", name], capture_output=True,
                                        text=True, check=True).stdout)[0]
        pid1 = int(doc["State"]["Pid"])
        deadline = time.monotonic() + 20
        chrooted = _find("/bin/busybox", pid1, deadline)
        dropped = _find("/tmp/sleep", pid1, deadline)
        mountinfo = Path(f"/proc/{chrooted}/mountinfo").read_text()
        assert f"upperdir={base}/up" in mountinfo, "the forged overlay is not mounted"
        yield {"id": cid, "chrooted": chrooted, "dropped": dropped, "base": base,
               "upper": doc["GraphDriver"]["Data"]["UpperDir"]}
    finally:
        subprocess.run(PODMAN + ["rm", "-f", "-t", "0", name], capture_output=True)


def test_a_forged_upperdir_never_reaches_host_files(tmp_path: Path,
                                                    forged: dict[str, Any]) -> None:
    (snap,) = respond(tmp_path, alert_for(forged["chrooted"], forged["id"]),
                      "[{snapshot: {paths: [/]}}]")
    assert snap["outcome"] == "done", snap
    with tarfile.open(snap["detail"]["path"]) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        contents = [tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()]
        names = tar.getnames()
    assert not any(CANARY in c for c in contents)
    assert not any(n.endswith("canary.txt") for n in names), names
    assert all(s["kind"] != "changed" or not s["path"].startswith(str(forged["base"]))
               for s in manifest["sources"]), manifest["sources"]
    # what the process itself sees through its root is still taken
    assert "rootfs/mine" in names


def test_the_upper_layer_comes_from_the_host_mount_not_the_process(
        forged: dict[str, Any]) -> None:
    # the forged root is in no host mount table: no upper layer at all
    assert trusted_upper_dir(forged["chrooted"]) is None
    # a process on the container's real root gets the layer the runtime made
    assert trusted_upper_dir(forged["dropped"]) == forged["upper"]
    assert (Path(forged["upper"]) / "tmp" / "sleep").is_file()
