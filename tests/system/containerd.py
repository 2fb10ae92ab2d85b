"""A private containerd serving the CRI, for the tests: its own config, root, state and socket
in a temporary directory (nothing of a containerd the host may run is touched), the offline
test images imported into its `k8s.io` namespace, started as a subprocess and stopped, with
every pod it ran, at the end.

No registry is reachable: the busybox test image comes from podman (scripts/test-image.sh),
and the sandbox ("pause") image is the same rootfs whose command sleeps, built with podman
from it; both are handed over with `podman save` + `ctr images import`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.system.cri_driver import CriDriver

IMAGE = "localhost/enforcer-busybox:test"
PAUSE_IMAGE = "localhost/enforcer-pause:test"
PODMAN = ["podman", "--cgroup-manager", "cgroupfs"]

# restrict_oom_score_adj: the CRI gives sandboxes an oom_score_adj of -998, and lowering it
# needs CAP_SYS_RESOURCE, which processes here lack (runc then fails with "can't get final
# child's PID from pipe"). disable_apparmor: no AppArmor on these kernels. The CNI
# directories stay empty: the tests' pods use the host's network namespace.
CONFIG = """\
version = 2
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{base}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{base}/cni/bin"
    conf_dir = "{base}/cni/conf"
"""


class ContainerdError(Exception):
    """containerd could not be started or prepared; the message carries its log."""


def available() -> bool:
    return all(shutil.which(b) for b in ("containerd", "ctr", "containerd-shim-runc-v2"))


def ensure_pause_image() -> None:
    """The sandbox image: the busybox test image, sleeping (built once with podman)."""
    if subprocess.run(PODMAN + ["image", "exists", PAUSE_IMAGE]).returncode == 0:
        return
    with tempfile.TemporaryDirectory() as ctx:
        Path(ctx, "Containerfile").write_text(
            f'FROM {IMAGE}\nCMD ["/bin/sleep", "2147483647"]\n')
        done = subprocess.run(PODMAN + ["build", "-q", "-t", PAUSE_IMAGE, ctx],
                              capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ContainerdError(f"podman build of {PAUSE_IMAGE} failed: {done.stderr}")


class Containerd:
    """One containerd process and a CriDriver on its socket."""

    def __init__(self, base: Path):
        self.base = base
        self.socket = str(base / "containerd.sock")
        self.log_path = base / "containerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.driver: CriDriver | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start containerd and wait (at most `timeout`) until its CRI answers."""
        from enforcer.adapters.cri import CriClient  # noqa: PLC0415

        for d in ("root", "state", "runc", "cni/bin", "cni/conf"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        config = self.base / "config.toml"
        config.write_text(CONFIG.format(base=self.base, socket=self.socket, pause=PAUSE_IMAGE))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        client = None
        last = "its socket did not appear"
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ContainerdError(f"containerd exited ({self.proc.returncode})"
                                          f"{self.log_tail()}")
                if os.path.exists(self.socket):
                    client = client or CriClient(self.socket, timeout=2.0)
                    try:
                        if client.version().get("runtime_name") == "containerd":
                            break
                    except OSError as exc:
                        last = str(exc)
                time.sleep(0.1)
            else:
                raise ContainerdError(f"containerd's CRI did not answer within {timeout:.0f} s "
                                      f"({last}){self.log_tail()}")
        finally:
            if client is not None:
                client.close()
        self.driver = CriDriver(self.socket)

    def import_images(self, *images: str) -> None:
        """podman save | ctr images import, into the CRI's namespace."""
        archive = self.base / "images.tar"
        saved = subprocess.run(PODMAN + ["save", "-q", "--format", "docker-archive", "-m",
                                         "-o", str(archive), *images],
                               capture_output=True, text=True, timeout=120)
        if saved.returncode != 0:
            raise ContainerdError(f"podman save failed: {saved.stderr}")
        done = subprocess.run(["ctr", "--address", self.socket, "-n", "k8s.io", "images",
                               "import", str(archive)], capture_output=True, text=True,
                              timeout=120)
        archive.unlink(missing_ok=True)
        if done.returncode != 0:
            raise ContainerdError(f"ctr images import failed: {done.stderr}{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\ncontainerd log (last lines):\n" + "\n".join(text)

    def stop(self) -> None:
        """Remove the pods (their shims exit with them), stop containerd, clean up."""
        if self.driver is not None:
            self.driver.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._kill_leftover_shims()
        self._unmount_below_base()
        shutil.rmtree(self.base, ignore_errors=True)

    def _kill_leftover_shims(self) -> None:
        # a shim whose pod could not be removed outlives containerd: find ours by the
        # address on their command line
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") \
                    and self.socket.encode() in argv:
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except OSError:
                    pass

    def _unmount_below_base(self) -> None:
        try:
            with open("/proc/self/mountinfo") as fh:
                points = [line.split()[4] for line in fh]
        except OSError:
            return
        base = str(self.base) + "/"
        for point in sorted((p for p in points if p.startswith(base)), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
