"""A store seeded from tests/data/audit/seed.jsonl: eight detections with known responses."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.store.importer import import_files
from enforcer.store.schema import connect

SEED = Path(__file__).resolve().parents[2] / "data" / "audit" / "seed.jsonl"
CORRUPT = SEED.with_name("corrupt.jsonl")


@pytest.fixture
def seeded(tmp_path):
    """An open store holding the seed records (retention off: the seed's dates are fixed)."""
    conn = connect(tmp_path / "audit.db")
    report = import_files(conn, [SEED])
    assert report.skipped == []
    yield conn
    conn.close()
