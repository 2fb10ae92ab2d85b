"""Per-minute counts kept beside the rows, so that charts and the dry-run summary read a few
thousand counters instead of grouping a million rows on every page view.

Series (`dim`): `rule` and `priority` count detections when they are first stored; `outcome`
counts detections per outcome class, once per detection and class; `dry-run` counts dry-run
responses per policy and action (joined by SEP). Each counter sits in the minute of its
detection's time.
Retention removes whole minutes and recounts the one minute it cut through.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable

MINUTE_NS = 60 * 1_000_000_000
SEP = "\x1f"  # joins policy and action; SQLite text with NUL in it does not compare whole

_UPSERT = """
INSERT INTO rollup (dim, minute, value, n) VALUES (?, ?, ?, ?)
ON CONFLICT (dim, minute, value) DO UPDATE SET n = n + excluded.n
"""


def minute(time_ns: int) -> int:
    """The minute (since the epoch) a time falls in."""
    return time_ns // MINUTE_NS


def add(conn: sqlite3.Connection, dim: str, items: Iterable[tuple[int, str | None]]) -> None:
    """Count one for each (time_ns, value) in series `dim`."""
    counts = Counter((minute(t), "" if v is None else str(v)) for t, v in items)
    conn.executemany(_UPSERT, [(dim, m, v, n) for (m, v), n in counts.items()])


def series(conn: sqlite3.Connection, dim: str, since_ns: int, until_ns: int,
           bucket_ns: int) -> list[tuple[int, str, int]]:
    """(bucket start, value, count) for `dim` over [since, until), buckets of `bucket_ns`
    (a whole number of minutes) counted from `since_ns`."""
    per = max(1, bucket_ns // MINUTE_NS)
    first = minute(since_ns)
    rows = conn.execute(
        "SELECT (minute - ?) / ? AS b, value, sum(n) FROM rollup WHERE dim = ? "
        "AND minute >= ? AND minute < ? GROUP BY b, value",
        (first, per, dim, first, minute(until_ns - 1) + 1))
    return [(since_ns + int(b) * bucket_ns, value, int(n)) for b, value, n in rows if n]


def totals(conn: sqlite3.Connection, dim: str, since_ns: int | None,
           until_ns: int | None) -> list[tuple[str, int, int]]:
    """(value, count, last minute's start in ns) for `dim`, over a time range if given."""
    clauses, args = ["dim = ?"], [dim]
    if since_ns is not None:
        clauses.append("minute >= ?")
        args.append(minute(since_ns))
    if until_ns is not None:
        clauses.append("minute <= ?")
        args.append(minute(until_ns - 1))
    rows = conn.execute(f"SELECT value, sum(n), max(minute) FROM rollup WHERE "
                        f"{' AND '.join(clauses)} GROUP BY value ORDER BY value", args)
    return [(value, int(n), int(last) * MINUTE_NS) for value, n, last in rows if n]


def recount_minute(conn: sqlite3.Connection, m: int) -> None:
    """Count minute `m` again from the rows (after retention cut through it)."""
    lo, hi = m * MINUTE_NS, (m + 1) * MINUTE_NS
    conn.execute("DELETE FROM rollup WHERE minute = ?", (m,))
    for dim, sql in (
        ("rule", "SELECT rule, count(*) FROM detections WHERE time_ns >= ? AND time_ns < ? "
                 "GROUP BY rule"),
        ("priority", "SELECT priority, count(*) FROM detections WHERE time_ns >= ? AND "
                     "time_ns < ? GROUP BY priority"),
        ("outcome", "SELECT outcome_class, count(DISTINCT det_id) FROM responses WHERE "
                    "det_time_ns >= ? AND det_time_ns < ? AND outcome_class IS NOT NULL "
                    "GROUP BY outcome_class"),
        ("dry-run", "SELECT coalesce(policy, '') || char(31) || coalesce(action, ''), "
                    "count(*) FROM responses WHERE det_time_ns >= ? AND det_time_ns < ? "
                    "AND outcome_class = 'dry-run' GROUP BY 1"),
    ):
        conn.executemany(_UPSERT, [(dim, m, "" if v is None else str(v), n)
                                   for v, n in conn.execute(sql, (lo, hi))])


def trim(conn: sqlite3.Connection) -> None:
    """Drop the counters of minutes that no longer hold rows; recount the oldest one."""
    oldest = conn.execute("SELECT min(time_ns) FROM detections").fetchone()[0]
    if oldest is None:
        conn.execute("DELETE FROM rollup")
        return
    m = minute(oldest)
    conn.execute("DELETE FROM rollup WHERE minute < ?", (m,))
    recount_minute(conn, m)


def rebuild(conn: sqlite3.Connection) -> None:
    """Count everything again from the rows."""
    conn.execute("DELETE FROM rollup")
    for dim, sql in (
        ("rule", "SELECT time_ns / ?, rule, count(*) FROM detections GROUP BY 1, 2"),
        ("priority", "SELECT time_ns / ?, priority, count(*) FROM detections GROUP BY 1, 2"),
        ("outcome", "SELECT det_time_ns / ?, outcome_class, count(DISTINCT det_id) FROM "
                    "responses WHERE outcome_class IS NOT NULL GROUP BY 1, 2"),
        ("dry-run", "SELECT det_time_ns / ?, coalesce(policy, '') || char(31) || "
                    "coalesce(action, ''), count(*) FROM responses WHERE outcome_class = "
                    "'dry-run' GROUP BY 1, 2"),
    ):
        conn.executemany(_UPSERT, [(dim, m, "" if v is None else str(v), n)
                                   for m, v, n in conn.execute(sql, (MINUTE_NS,))])
