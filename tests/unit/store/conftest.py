"""A store seeded from tests/data/audit/: eight alerts (alerts.jsonl, Falco's JSON as the
file output writes it) and the responder's records for them (audit.jsonl)."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.store.importer import import_files
from enforcer.store.schema import connect

DATA = Path(__file__).resolve().parents[2] / "data" / "audit"
# Responses first: the alerts then complete detections that the responses created.
SEED = [DATA / "audit.jsonl", DATA / "alerts.jsonl"]


@pytest.fixture
def seeded(tmp_path):
    """An open store holding the seed records (retention off: the seed's dates are fixed)."""
    conn = connect(tmp_path / "audit.db")
    report = import_files(conn, SEED)
    assert report.skipped == []
    yield conn
    conn.close()
