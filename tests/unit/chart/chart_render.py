"""Render charts/enforcer with a real helm and pick objects out of the result."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

CHART = REPO / "charts" / "enforcer"
KUBE_VERSION = "1.33.0"  # the kubectl shipped beside helm is v1.33
OLDEST_KUBE_VERSION = "1.25.0"  # Chart.yaml's kubeVersion


class HelmError(Exception):
    """helm exited non-zero; the message is its stderr."""


def helm(tools, *args: str) -> str:
    """Run helm; its stdout, or HelmError."""
    out = subprocess.run([str(tools.helm), *args], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise HelmError(out.stderr.strip() or out.stdout.strip())
    return out.stdout


def render(tools, tmp_path: Path, values: dict[str, Any] | None = None,
           kube_version: str = KUBE_VERSION) -> list[dict]:
    """`helm template` of the chart (release `rel`, namespace `security`) as objects."""
    args = ["template", "rel", str(CHART), "--namespace", "security",
            "--kube-version", kube_version]
    if values:
        values_file = tmp_path / "values.yaml"
        values_file.write_text(yaml.safe_dump(values))
        args += ["--values", str(values_file)]
    return [doc for doc in yaml.safe_load_all(helm(tools, *args)) if doc]


def one(objects: list[dict], kind: str) -> dict:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(objects: list[dict]) -> dict:
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    return agent


def env_of(objects: list[dict]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(objects)["env"]}
