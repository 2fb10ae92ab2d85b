"""Keep the audit store bounded: drop the oldest detections past an age or a size.

Retention (documented in docs/console.md): detections older than `max_age_s` go first, then,
while the live data is above `max_bytes`, the oldest tenth at a time. A detection goes with
all its responses and its text index entry. Freed pages are handed back to the file system
(auto_vacuum = INCREMENTAL), so the file shrinks as well. The JSONL audit log stays the
durable record: a pruned store can be rebuilt from it with `enforcer audit import`.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from enforcer.store import rollup

DEFAULT_MAX_AGE_S = 30 * 24 * 3600
DEFAULT_MAX_BYTES = 1 << 30


@dataclass(frozen=True)
class Retention:
    """How much the store keeps; 0 or None disables that bound."""

    max_age_s: float | None = DEFAULT_MAX_AGE_S
    max_bytes: int | None = DEFAULT_MAX_BYTES


def live_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of pages in use (the file less its free list)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * page_size


def prune(conn: sqlite3.Connection, retention: Retention, now_ns: int | None = None) -> int:
    """Apply `retention`; returns how many detections were removed."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    removed = 0
    if retention.max_age_s:
        cutoff = now_ns - int(retention.max_age_s * 1_000_000_000)
        removed += _delete(conn, "DELETE FROM detections WHERE time_ns < ?", (cutoff,))
    if retention.max_bytes:
        while live_bytes(conn) > retention.max_bytes:
            total = conn.execute("SELECT count(*) FROM detections").fetchone()[0]
            if not total:
                break
            step = max(1, total // 10)
            removed += _delete(conn, "DELETE FROM detections WHERE id IN (SELECT id FROM "
                               "detections ORDER BY time_ns LIMIT ?)", (step,))
    if removed:
        conn.execute("BEGIN")
        try:
            rollup.trim(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("PRAGMA incremental_vacuum")
    return removed


def _delete(conn: sqlite3.Connection, sql: str, args: tuple[int, ...]) -> int:
    conn.execute("BEGIN")
    try:
        count = conn.execute(sql, args).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return count
