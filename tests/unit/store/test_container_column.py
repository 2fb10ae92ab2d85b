"""The detections' container column: filled from container.name (else container.id), and
added in place to a store made before it existed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from enforcer.store.schema import connect


def test_a_store_without_the_column_gets_it_and_its_index(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    connect(path).close()
    raw = sqlite3.connect(path)
    raw.execute("DROP INDEX det_container")
    raw.execute("ALTER TABLE detections DROP COLUMN container")
    raw.commit()
    raw.close()
    conn = connect(path)
    names = {row[1] for row in conn.execute("PRAGMA table_info(detections)")}
    assert "container" in names
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'det_container'").fetchone()
    conn.close()
