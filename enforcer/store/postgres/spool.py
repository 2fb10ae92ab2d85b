"""The local spool: records waiting for the database, in order, in an SQLite file.

While the database is down (or too slow), the writer appends every batch here instead, and
replays from the oldest when it is back, deleting what was committed. A crash between the
database's commit and the delete replays a batch twice, which the stable ids make harmless.
The spool is bounded: past `max_records` new records are refused and counted (the JSONL
audit log still has them).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


class Spool:
    """Append-only FIFO of JSON texts in an SQLite file (WAL, one writer: its thread)."""

    def __init__(self, path: str | Path, max_records: int = 2_000_000):
        self.path = Path(path)
        self.max_records = max_records
        self.refused = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS spool "
                           "(seq INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL)")
        self.count = self._conn.execute("SELECT count(*) FROM spool").fetchone()[0]

    def append(self, texts: list[str]) -> int:
        """Queue records behind those waiting; returns how many fitted."""
        room = max(0, self.max_records - self.count)
        kept = texts[:room]
        self.refused += len(texts) - len(kept)
        if kept:
            self._conn.execute("BEGIN")
            self._conn.executemany("INSERT INTO spool (record) VALUES (?)",
                                   [(t,) for t in kept])
            self._conn.execute("COMMIT")
            self.count += len(kept)
        return len(kept)

    def oldest(self, limit: int) -> list[tuple[int, str]]:
        """Up to `limit` (seq, text) from the front."""
        return self._conn.execute("SELECT seq, record FROM spool ORDER BY seq LIMIT ?",
                                  (limit,)).fetchall()

    def remove_through(self, seq: int) -> None:
        """Forget everything up to `seq` (it is in the database)."""
        removed = self._conn.execute("DELETE FROM spool WHERE seq <= ?", (seq,)).rowcount
        self.count -= removed

    def close(self) -> None:
        self._conn.close()
