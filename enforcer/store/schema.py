"""The audit store's SQLite schema and how to open it.

One row per detection (an alert) in `detections`, one row per policy decision or action
outcome in `responses`, and an FTS5 index over the alert's rule, output and output fields.
The filter columns the console pages on carry `(column, time)` indexes so that a filtered,
newest-first page reads only the rows it shows; responses carry the detection's time for the
same reason.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

SCHEMA_VERSION = 3

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS detections (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    time_ns INTEGER NOT NULL,
    rule TEXT,
    priority INTEGER,
    output TEXT,
    output_fields TEXT,
    tags TEXT,
    source TEXT,
    hostname TEXT,
    namespace TEXT,
    pod TEXT,
    node TEXT,
    container TEXT,
    trace_id TEXT,
    complete INTEGER NOT NULL DEFAULT 1,
    outcomes TEXT,
    policies TEXT,
    actions TEXT
);
CREATE INDEX IF NOT EXISTS det_time ON detections (time_ns);
CREATE INDEX IF NOT EXISTS det_rule ON detections (rule, time_ns);
CREATE INDEX IF NOT EXISTS det_priority ON detections (priority, time_ns);
CREATE INDEX IF NOT EXISTS det_namespace ON detections (namespace, time_ns);
CREATE INDEX IF NOT EXISTS det_pod ON detections (pod, time_ns);
CREATE INDEX IF NOT EXISTS det_node ON detections (node, time_ns);
CREATE TABLE IF NOT EXISTS responses (
    id INTEGER PRIMARY KEY,
    rhash INTEGER NOT NULL,
    det_id INTEGER NOT NULL,
    det_time_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    policy TEXT,
    action TEXT,
    dry_run INTEGER,
    outcome TEXT,
    outcome_class TEXT,
    error TEXT,
    retries INTEGER,
    latency_ms REAL,
    trace_id TEXT,
    span_id TEXT,
    record TEXT  -- the record as written: target, operation and details are read from it
);
-- (det_id, rhash) makes a re-import add nothing; it also finds a detection's responses.
CREATE UNIQUE INDEX IF NOT EXISTS resp_det ON responses (det_id, rhash);
CREATE INDEX IF NOT EXISTS resp_policy ON responses (policy, det_time_ns, det_id);
CREATE INDEX IF NOT EXISTS resp_action ON responses (action, det_time_ns, det_id);
CREATE INDEX IF NOT EXISTS resp_outcome ON responses (outcome_class, det_time_ns, det_id);
-- Per-minute counters for charts and the dry-run summary (see rollup.py).
CREATE TABLE IF NOT EXISTS rollup (
    dim TEXT NOT NULL,
    minute INTEGER NOT NULL,
    value TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (dim, minute, value)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS detections_fts USING fts5 (
    rule, output, output_fields, content='detections', content_rowid='id'
);
CREATE TRIGGER IF NOT EXISTS det_fts_insert AFTER INSERT ON detections BEGIN
    INSERT INTO detections_fts (rowid, rule, output, output_fields)
    VALUES (new.id, new.rule, new.output, new.output_fields);
END;
CREATE TRIGGER IF NOT EXISTS det_fts_delete AFTER DELETE ON detections BEGIN
    INSERT INTO detections_fts (detections_fts, rowid, rule, output, output_fields)
    VALUES ('delete', old.id, old.rule, old.output, old.output_fields);
END;
CREATE TRIGGER IF NOT EXISTS det_fts_update AFTER UPDATE OF rule, output, output_fields
ON detections BEGIN
    INSERT INTO detections_fts (detections_fts, rowid, rule, output, output_fields)
    VALUES ('delete', old.id, old.rule, old.output, old.output_fields);
    INSERT INTO detections_fts (rowid, rule, output, output_fields)
    VALUES (new.id, new.rule, new.output, new.output_fields);
END;
CREATE TRIGGER IF NOT EXISTS det_cascade AFTER DELETE ON detections BEGIN
    DELETE FROM responses WHERE det_id = old.id;
END;
"""


_TEXT_TRIGGERS = ("det_fts_insert", "det_fts_delete", "det_fts_update")


def suspend_text_index(conn: sqlite3.Connection) -> None:
    """Stop indexing alert text row by row, for a bulk import into an empty store.

    Indexing everything at the end (FTS5 'rebuild') costs a third of indexing row by row.
    Only for an empty store: the text index is rebuilt from every row.
    """
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('text_index_pending', '1')")
    for name in _TEXT_TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")


def resume_text_index(conn: sqlite3.Connection) -> None:
    """Index the text of every row at once and go back to indexing row by row."""
    conn.execute("BEGIN")
    try:
        conn.execute("INSERT INTO detections_fts (detections_fts) VALUES ('rebuild')")
        conn.execute("DELETE FROM meta WHERE key = 'text_index_pending'")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.executescript(_DDL)  # puts the triggers back


class StoreError(Exception):
    """The store file cannot be opened or is not an enforcer audit store."""


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (and, unless read-only, create or upgrade) the audit store at `path`."""
    path = Path(path)
    if readonly:
        if not path.exists():
            raise StoreError(f"{path}: no audit store here; create one with "
                             "`enforcer audit import FILE...` or run the agent with --ui")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA cache_size = -65536")
        conn.execute("PRAGMA temp_store = MEMORY")
        if readonly:
            _check_version(conn, path)
            return conn
        # auto_vacuum must be chosen before the first table exists; it lets pruning give
        # pages back to the file system (see retention).
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(_DDL)
        _add_container_column(conn)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                     (str(SCHEMA_VERSION),))
        _check_version(conn, path)
        if conn.execute("SELECT 1 FROM meta WHERE key = 'text_index_pending'").fetchone():
            resume_text_index(conn)  # a bulk import stopped before it indexed the text
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path}: not a usable audit store ({exc}); if it is damaged, "
                         "rebuild it from the JSONL logs with `enforcer audit import`") from exc
    return conn


def _add_container_column(conn: sqlite3.Connection) -> None:
    """The container column (the alert's container.name) came after schema 3's first
    stores: added in place, with its index, since every other column is unchanged."""
    names = {row[1] for row in conn.execute("PRAGMA table_info(detections)")}
    if "container" not in names:
        conn.execute("ALTER TABLE detections ADD COLUMN container TEXT")
    conn.execute("CREATE INDEX IF NOT EXISTS det_container ON detections (container, time_ns)")


def _check_version(conn: sqlite3.Connection, path: Path) -> None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not a readable enforcer audit store ({exc}); rebuild it "
                         "from the JSONL logs with `enforcer audit import`") from exc
    if row is None or int(row[0]) != SCHEMA_VERSION:
        found = None if row is None else row[0]
        raise StoreError(f"{path}: audit store schema {found}, this enforcer reads "
                         f"{SCHEMA_VERSION}; rebuild it with `enforcer audit import`")


def default_store_path() -> Path:
    """Where the agent keeps the store unless told otherwise ($ENFORCER_STORE wins)."""
    return Path(os.environ.get("ENFORCER_STORE") or "/var/lib/enforcer/audit.db")
