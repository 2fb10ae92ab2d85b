"""Per-minute counters of the PostgreSQL store (table `counts`, migration 3): what the
console's charts and its dry-run summary read, so that a chart over a day of a busy cluster
sums a few thousand counters instead of grouping millions of rows.

Series (`dim`), each per minute of the detection's time and per node, as the SQLite store's
rollup: `rule` and `priority` count detections when first stored (a placeholder made from a
response counts then, its alert later does not); `outcome` counts detections per outcome
class, once per detection and class; `dry-run` counts dry-run responses per policy and
action (joined by SEP).

The writer adds to them in the statement that stores the rows (copy_in.py): the counters
count exactly the rows the INSERT … ON CONFLICT DO NOTHING really added, so a replayed batch
counts nothing. Agents never touch another node's counters, so they never wait on each other.
"""

from __future__ import annotations

from typing import Any

MINUTE_NS = 60 * 1_000_000_000
SEP = "\x1f"  # joins policy and action, as in the SQLite rollup

# Adds the SELECT's (dim, minute, node, value, n, last_ns) rows to the counters.
_UPSERT = """INSERT INTO counts (dim, minute, node, value, n, last_ns) {select}
ON CONFLICT (dim, minute, node, value) DO UPDATE SET n = counts.n + excluded.n,
    last_ns = greatest(counts.last_ns, excluded.last_ns)"""

# `new`: the detections the INSERT added (RETURNING node, time_ns, rule, priority).
COUNT_DETECTIONS = _UPSERT.format(select=f"""
SELECT 'rule', time_ns / {MINUTE_NS}, node, coalesce(rule, ''), count(*), max(time_ns)
  FROM new GROUP BY 2, 3, 4
UNION ALL
SELECT 'priority', time_ns / {MINUTE_NS}, node, coalesce(priority::text, ''), count(*),
       max(time_ns)
  FROM new GROUP BY 2, 3, 4""")

# `new`: the responses the INSERT added. A statement does not see its own inserts, so
# `responses` here holds what was stored before: a class the detection already had is not
# counted again.
COUNT_RESPONSES = _UPSERT.format(select=f"""
SELECT 'outcome', det_time_ns / {MINUTE_NS}, node, outcome_class, count(DISTINCT det_id),
       max(det_time_ns)
  FROM new WHERE outcome_class IS NOT NULL AND NOT EXISTS (
      SELECT 1 FROM responses x WHERE x.det_id = new.det_id
         AND x.det_time_ns = new.det_time_ns AND x.outcome_class = new.outcome_class)
  GROUP BY 2, 3, 4
UNION ALL
SELECT 'dry-run', det_time_ns / {MINUTE_NS}, node,
       coalesce(policy, '') || chr(31) || coalesce(action, ''), count(*), max(det_time_ns)
  FROM new WHERE outcome_class = 'dry-run' GROUP BY 2, 3, 4""")


def series(conn: Any, dim: str, since_ns: int, until_ns: int,
           bucket_ns: int) -> list[tuple[int, str, int]]:
    """(bucket start, value, count) of `dim` over [since, until) for every node, in buckets
    of `bucket_ns` (a whole number of minutes) counted from `since_ns`'s minute."""
    per = max(1, bucket_ns // MINUTE_NS)
    first = since_ns // MINUTE_NS
    rows = conn.execute(
        "SELECT (minute - %(f)s) / %(p)s AS b, value, sum(n) AS n FROM counts WHERE dim = %(d)s "
        "AND minute >= %(f)s AND minute < %(l)s GROUP BY 1, 2",
        {"f": first, "p": per, "d": dim, "l": (until_ns - 1) // MINUTE_NS + 1})
    return [(since_ns + int(r["b"]) * bucket_ns, r["value"], int(r["n"])) for r in rows
            if r["n"]]


def dry_runs(conn: Any, since_ns: int | None, until_ns: int | None, node: str | None,
             policy: str | None) -> list[dict[str, Any]]:
    """Per policy, action and node: dry-run responses (n) and the newest one's detection time
    (last_ns), over the minutes of [since, until)."""
    clauses, args = ["dim = 'dry-run'"], []
    if since_ns is not None:
        clauses.append("minute >= %s")
        args.append(since_ns // MINUTE_NS)
    if until_ns is not None:
        clauses.append("minute <= %s")
        args.append((until_ns - 1) // MINUTE_NS)
    if node:
        clauses.append("node = %s")
        args.append(node)
    if policy:
        clauses.append("split_part(value, chr(31), 1) = %s")
        args.append(policy)
    rows = conn.execute(
        "SELECT split_part(value, chr(31), 1) AS policy, split_part(value, chr(31), 2) AS "
        "action, node, sum(n) AS n, max(last_ns) AS last_ns FROM counts WHERE "
        f"{' AND '.join(clauses)} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", args)
    return [{**r, "n": int(r["n"])} for r in rows if r["n"]]
