"""Every console asset ships in the wheel: pyproject's package-data covers them all."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_package_data_covers_templates_and_static():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["enforcer.console"]
    root = REPO / "enforcer" / "console"
    assets = [p.relative_to(root).as_posix() for sub in ("templates", "static")
              for p in (root / sub).iterdir() if p.is_file()]
    assert assets
    uncovered = [a for a in assets if not any(fnmatch.fnmatch(a, pat) for pat in patterns)]
    assert uncovered == []


def test_no_asset_comes_from_elsewhere():
    # Clusters are often offline: no page may load anything but its own static files.
    root = REPO / "enforcer" / "console" / "templates"
    for page in root.glob("*.html"):
        text = page.read_text()
        assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "https://" not in text and "<script" not in text, page.name
