"""The offline test image: a rootfs of busybox-static imported into podman. Other test
modules (and helpers) may build the same image; building is skipped when it exists."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import time

IMAGE = "localhost/enforcer-busybox:test"
PODMAN = ["podman", "--cgroup-manager", "cgroupfs"]
RUN_LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def podman_available() -> bool:
    return shutil.which("podman") is not None and shutil.which("busybox") is not None


def ensure_busybox_image(image: str = IMAGE) -> str:
    """Import the busybox image unless it is already there; returns its name."""
    if subprocess.run(PODMAN + ["image", "exists", image]).returncode == 0:
        return image
    busybox = shutil.which("busybox")
    assert busybox, "busybox-static is not installed (apt-get install busybox-static)"
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "tmp", "etc", "root", "proc", "sys", "dev"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o1777 if directory == "tmp" \
                else 0o755, now
            tar.addfile(info)
        with open(busybox, "rb") as handle:
            data = handle.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(data), 0o755, now
        tar.addfile(info, io.BytesIO(data))
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "busybox", now
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size, info.mode, info.mtime = len(passwd), 0o644, now
        tar.addfile(info, io.BytesIO(passwd))
    done = subprocess.run(PODMAN + ["import", "--change", "ENV=PATH=/bin", "-", image],
                          input=buffer.getvalue(), capture_output=True)
    if done.returncode != 0 and \
            subprocess.run(PODMAN + ["image", "exists", image]).returncode != 0:
        raise AssertionError(f"podman import failed: {done.stderr.decode()}")
    return image
