"""Fixtures for system tests that respond to real processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require


@pytest.fixture
def root() -> None:
    require(os.geteuid() == 0, "not running as root",
            "run the tests as root: sudo bash scripts/test.sh")


@pytest.fixture
def victims(tmp_path: Path) -> Iterator[list]:
    started: list = []
    yield started
    for victim in started:
        victim.cleanup()
