"""The container image, built for real with podman (scripts/build-image.sh) and run the way the
chart runs it: the rendered DaemonSet's capabilities, host mounts, read-only root and host PID
namespace, translated to podman options. Inside, bcc compiles and attaches a tracepoint program
against the host's kernel headers and sees the host's execs.

Slow (about two minutes on a cold cache: Debian packages and wheels are downloaded into the
build), so one test builds once and checks everything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, require, run_labels
from tests.unit.chart.chart_render import container, one, render
from tests.unit.chart.conftest import kube_tools  # noqa: F401  (fixture)

pytestmark = [pytest.mark.root, pytest.mark.podman]

TAG = "localhost/enforcer:system-test"
PODMAN = ["podman", "--cgroup-manager", "cgroupfs"]
# with the suite run's label, by which scripts/leftovers.py finds a container left behind
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", *run_labels()]

BPF_SMOKE = r'''
import subprocess, sys, time
from bcc import BPF
b = BPF(text="""
BPF_ARRAY(execs, u64, 1);
TRACEPOINT_PROBE(sched, sched_process_exec) {
    int zero = 0;
    u64 *n = execs.lookup(&zero);
    if (n) __sync_fetch_and_add(n, 1);
    return 0;
}
""")
for _ in range(3):
    subprocess.run(["/bin/true"], check=True)
time.sleep(0.2)
print("execs", b["execs"][0].value)
'''




def podman_options_of_the_chart(objects: list[dict], tmp_path: Path) -> list[str]:
    """The agent pod's security context and host mounts, as podman run options."""
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    agent = container(objects)
    ctx = agent["securityContext"]
    options = []
    if pod.get("hostPID"):
        options += ["--pid=host"]
    if pod.get("hostNetwork"):
        options += ["--network=host"]
    if ctx.get("privileged"):
        options += ["--privileged"]
    else:
        options += ["--cap-drop=ALL", "--cap-add=" + ",".join(ctx["capabilities"]["add"])]
    if ctx.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    if ctx.get("seccompProfile", {}).get("type") == "Unconfined":
        options += ["--security-opt", "seccomp=unconfined"]
    if ctx.get("readOnlyRootFilesystem"):
        options += ["--read-only"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in agent["volumeMounts"]:
        volume = volumes[mount["name"]]
        suffix = ":ro" if mount.get("readOnly") else ""
        if "emptyDir" in volume:
            options += ["--tmpfs", mount["mountPath"]]
        elif "hostPath" in volume:
            host = Path(volume["hostPath"]["path"])
            if not host.exists():
                if volume["hostPath"].get("type") != "DirectoryOrCreate":
                    continue  # like a missing untyped hostPath: nothing to see there
                # the chart's audit and snapshot directories: keep them off the host
                host = tmp_path / mount["name"]
                host.mkdir()
            options += ["-v", f"{host}:{mount['mountPath']}{suffix}"]
    return options


def test_image_builds_and_loads_bpf_under_the_charts_security_context(kube_tools, tmp_path):  # noqa: F811
    require(os.geteuid() == 0, "not running as root", "sudo bash scripts/test.sh")
    require(shutil.which("podman") is not None, "podman is not installed",
            "scripts/setup.sh installs it")
    require(shutil.which("mmdebstrap") is not None, "mmdebstrap is not installed (it makes "
            "the Debian base image offline)", "scripts/setup.sh installs it")
    build = subprocess.run(["bash", str(REPO / "scripts/build-image.sh"), TAG],
                           capture_output=True, text=True, timeout=1500)
    assert build.returncode == 0, (build.stdout + build.stderr)[-4000:]

    version = subprocess.run([*PODMAN, "run", "--rm", *LIMITS, TAG, "--version"],
                             capture_output=True, text=True, timeout=300)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("enforcer ")

    objects = render(kube_tools, tmp_path)
    (tmp_path / "smoke.py").write_text(BPF_SMOKE)
    options = podman_options_of_the_chart(objects, tmp_path)
    assert "--privileged" not in options
    smoke = subprocess.run(
        [*PODMAN, "run", "--rm", *LIMITS, *options, "-v", f"{tmp_path / 'smoke.py'}:/smoke.py:ro",
         "--entrypoint", "/opt/enforcer/bin/python", TAG, "/smoke.py"],
        capture_output=True, text=True, timeout=600)
    assert smoke.returncode == 0, smoke.stderr[-4000:]
    assert int(smoke.stdout.split()[-1]) >= 3, smoke.stdout

    rules = subprocess.run(
        [*PODMAN, "run", "--rm", *LIMITS, "--entrypoint", "cat", TAG,
         "/usr/share/enforcer/rules/falco_rules.yaml"],
        capture_output=True, text=True, timeout=300)
    assert rules.returncode == 0, rules.stderr
    assert yaml.safe_load(rules.stdout) == yaml.safe_load(
        (REPO / "policies/rules/falco_rules.yaml").read_text())

    # The installed agent in the image judges exactly as this checkout does.
    for argv in (["validate", "/usr/share/enforcer/rules"],
                 ["replay", "--hostname", "node-1", "/usr/share/enforcer/samples/events.jsonl"]):
        in_image = subprocess.run([*PODMAN, "run", "--rm", *LIMITS, "--read-only", TAG, *argv],
                                  capture_output=True, text=True, timeout=300)
        host_argv = [a.replace("/usr/share/enforcer", str(REPO / "policies")) for a in argv]
        here = subprocess.run([sys.executable, "-m", "enforcer", *host_argv],
                              capture_output=True, text=True, timeout=300, cwd=REPO)
        assert (in_image.returncode, in_image.stdout) == (here.returncode, here.stdout), argv
        assert in_image.stdout.strip()
