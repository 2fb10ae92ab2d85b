"""Fixtures for root tests that need the real kernel: eBPF probes, podman."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, require, run_labels
from tests.system.containerd import PAUSE_IMAGE, Containerd, ContainerdError, ensure_pause_image
from tests.system.containerd import available as containerd_available

IMAGE = "localhost/enforcer-busybox:test"


def require_ebpf() -> None:
    """Root, bcc, tracefs and kernel headers, or skip (fail under CI=true)."""
    require(os.geteuid() == 0, "not running as root", "run the tests as root (scripts/test.sh)")
    require(importlib.util.find_spec("bcc") is not None, "the bcc Python module",
            "run scripts/setup.sh (installs python3-bpfcc, venv with system site-packages)")
    require(Path("/sys/kernel/tracing/events/syscalls").is_dir(), "tracefs at /sys/kernel/tracing",
            "run scripts/setup.sh (mounts tracefs)")
    build = Path(f"/lib/modules/{os.uname().release}/build/include")
    require(build.exists(), f"kernel headers at {build.parent}",
            "run scripts/setup.sh (installs linux-headers-amd64 and links them)")


def require_podman() -> None:
    """podman and the offline busybox test image, or skip (fail under CI=true)."""
    require(shutil.which("podman") is not None, "podman", "run scripts/setup.sh")
    subprocess.run(["bash", str(REPO / "scripts" / "test-image.sh")], check=False,
                   capture_output=True)
    ok = subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode == 0
    require(ok, f"the test image {IMAGE}", "run scripts/test-image.sh (builds it offline)")


PODMAN_FAILED = 125  # podman's exit code for an error of its own


def podman_run(*args: str, name: str, labels: dict[str, str] | None = None,
               extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`podman run --rm` of the busybox image with this machine's required flags."""
    cmd = ["podman", "--cgroup-manager", "cgroupfs", "run", "--rm", "--name", name,
           "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", *extra]
    cmd += run_labels()
    for k, v in (labels or {}).items():
        cmd += ["--label", f"{k}={v}"]
    cmd += [IMAGE, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode == PODMAN_FAILED:
        # podman itself failed (not the command in the container): once more, so that a
        # hiccup of the test's container runtime does not pass for a missed detection
        sys.stderr.write(f"podman run failed, retrying once: {done.stderr.strip()[-500:]}\n")
        time.sleep(1)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != PODMAN_FAILED, f"podman run failed twice: {done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="session")
def containerd_cri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """A private containerd serving the CRI (tests/system/containerd.py), with the busybox
    test image and its pause image imported; stopped with its pods at the end."""
    require(os.geteuid() == 0, "not running as root", "run the tests as root (scripts/test.sh)")
    require(containerd_available(), "containerd, ctr and containerd-shim-runc-v2",
            "run scripts/setup.sh (installs the Debian package containerd)")
    require_podman()
    runtime = Containerd(tmp_path_factory.mktemp("containerd"))
    try:
        ensure_pause_image()
        runtime.start()
        runtime.import_images(IMAGE, PAUSE_IMAGE)
    except ContainerdError as exc:
        runtime.stop()
        pytest.fail(f"could not start the test containerd: {exc}", pytrace=False)
    yield runtime
    runtime.stop()


@pytest.fixture(scope="session")
def ebpf_ready() -> None:
    require_ebpf()


PODMAN_SOCKET = "/run/podman/podman.sock"


@pytest.fixture(scope="session")
def podman_ready() -> Iterator[None]:
    """podman, the test image, and its Docker-compatible API on PODMAN_SOCKET (started
    here, and stopped at the end, when nothing serves it yet)."""
    require_podman()
    from enforcer.adapters.docker_api import ping  # noqa: PLC0415

    proc = None
    if not (os.path.exists(PODMAN_SOCKET) and ping(PODMAN_SOCKET)):
        os.makedirs(os.path.dirname(PODMAN_SOCKET), exist_ok=True)
        proc = subprocess.Popen(
            ["podman", "--cgroup-manager", "cgroupfs", "system", "service", "--time=0",
             f"unix://{PODMAN_SOCKET}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
                os.path.exists(PODMAN_SOCKET) and ping(PODMAN_SOCKET)):
            time.sleep(0.1)
    require(ping(PODMAN_SOCKET), f"the podman API on {PODMAN_SOCKET}",
            "podman system service must be able to start")
    yield
    if proc is not None:
        proc.terminate()
        proc.wait(10)
