"""Write a batch of rows to PostgreSQL: COPY into temporary tables, then one INSERT … ON
CONFLICT DO NOTHING per table, all in one transaction, each adding what it stored to the
per-minute counters (counts.py).

COPY is the fast way in (one round trip for the whole batch); the temporary tables let the
final INSERT skip rows already stored, which COPY alone cannot. A detection stored as a
placeholder (a response came first) is completed by its alert; a complete one never changes.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from enforcer.store.postgres.counts import COUNT_DETECTIONS, COUNT_RESPONSES
from enforcer.store.postgres.rows import DETECTION_COLUMNS, RESPONSE_COLUMNS, Rows

_TEMP = """
CREATE TEMP TABLE IF NOT EXISTS det_in (LIKE detections) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS resp_in (LIKE responses) ON COMMIT DELETE ROWS;
"""

_DET_COLS = ", ".join(DETECTION_COLUMNS)
_RESP_COLS = ", ".join(RESPONSE_COLUMNS)
_COMPLETE = ", ".join(f"{c} = excluded.{c}" for c in DETECTION_COLUMNS
                      if c not in ("id", "node", "key", "time_ns"))

# Only what is new is counted (RETURNING gives the rows really inserted).
_INSERT_DETECTIONS = f"""
WITH new AS (
    INSERT INTO detections ({_DET_COLS}) SELECT {_DET_COLS} FROM det_in
    ON CONFLICT (time_ns, id) DO NOTHING RETURNING node, time_ns, rule, priority, complete),
counted AS ({COUNT_DETECTIONS})
SELECT count(*) AS n, count(*) FILTER (WHERE complete) AS complete FROM new
"""

# The alerts whose detection was stored before as a placeholder (or is a retry): run only
# when some complete row was not new. A complete row stays as it is.
_COMPLETE_DETECTIONS = f"""
INSERT INTO detections ({_DET_COLS}) SELECT {_DET_COLS} FROM det_in WHERE complete
ON CONFLICT (time_ns, id) DO UPDATE SET {_COMPLETE}
WHERE NOT detections.complete
"""

_INSERT_RESPONSES = f"""
WITH new AS (
    INSERT INTO responses ({_RESP_COLS}) SELECT {_RESP_COLS} FROM resp_in
    ON CONFLICT (det_time_ns, id) DO NOTHING
    RETURNING node, det_id, det_time_ns, outcome_class, policy, action),
counted AS ({COUNT_RESPONSES})
SELECT count(*) AS n FROM new
"""


class Partitions:
    """The days whose partitions this connection knows exist (made on first use)."""

    def __init__(self) -> None:
        self.known: set[date] = set()

    def ensure(self, conn: Any, days: set[date]) -> None:
        """Make the partitions of `days`, in a transaction of their own: making one locks
        the parent tables, which must not wait behind (or hold up) a batch's inserts."""
        missing = sorted(days - self.known)
        if missing:
            with conn.transaction():
                conn.execute("SELECT enforcer_day_partitions(%s::date[])", (missing,))
            self.known.update(missing)


def write(conn: Any, rows: Rows, partitions: Partitions) -> tuple[int, int]:
    """Store `rows` in one transaction; returns (detections, responses) newly stored."""
    if not rows:
        return 0, 0
    partitions.ensure(conn, rows.days())
    with conn.transaction():
        conn.execute(_TEMP)
        with conn.cursor() as cur:
            if rows.detections:
                with cur.copy(f"COPY det_in ({_DET_COLS}) FROM STDIN") as copy:
                    for row in rows.detections.values():
                        copy.write_row(row)
            if rows.responses:
                with cur.copy(f"COPY resp_in ({_RESP_COLS}) FROM STDIN") as copy:
                    for row in rows.responses.values():
                        copy.write_row(row)
            dets = complete = 0
            if rows.detections:
                dets, complete = cur.execute(_INSERT_DETECTIONS).fetchone()
            if complete < rows.complete():
                cur.execute(_COMPLETE_DETECTIONS)
            resps = 0
            if rows.responses:
                resps = cur.execute(_INSERT_RESPONSES).fetchone()[0]
    return dets, resps
