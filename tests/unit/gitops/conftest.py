"""A writable copy of docs/gitops/example for each test, to break on purpose."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO

EXAMPLE = REPO / "docs" / "gitops" / "example"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("ENFORCER_ENABLED_ACTIONS", raising=False)
    copy = tmp_path / "policy-repo"
    shutil.copytree(EXAMPLE, copy)
    return copy


def edit(path: Path, old: str, new: str) -> int:
    """Replace `old` (which must occur once) and return the 1-based line where it was."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    line = text[:text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new))
    return line
