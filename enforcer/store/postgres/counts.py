"""Counters of the PostgreSQL store (table `counts`, migration 3): what the console's charts
and its dry-run summary read, so that a chart over a month of a busy cluster sums a few
thousand counters instead of grouping millions of rows.

Series (`dim`), as the SQLite store's rollup: `rule` and `priority` count detections when
first stored (a placeholder made from a response counts then, its alert later does not);
`outcome` counts detections per outcome class, once per detection and class; `dry-run` counts
dry-run responses per policy and action (joined by SEP). Each is kept per node (agents never
touch another node's counters, so they never wait on each other) and per block of SPANS
minutes of the detection's time, every block aligned to its length: a day's chart reads 24
hourly counters per node and value, not 1 440 minutes' worth.

The writer adds to them in the statement that stores the rows (copy_in.py): the counters
count exactly the rows the INSERT … ON CONFLICT DO NOTHING really added, so a replayed batch
counts nothing.
"""

from __future__ import annotations

from typing import Any

MINUTE_NS = 60 * 1_000_000_000
SEP = "\x1f"  # joins policy and action, as in the SQLite rollup
SPANS = (1440, 60, 15, 1)  # block lengths in minutes, longest first; each divides the next
_SPAN_ARRAY = "ARRAY[" + ", ".join(map(str, SPANS)) + "]"

# Adds the SELECT's (dim, span, start, node, value, n, last_ns) rows to the counters.
_UPSERT = """INSERT INTO counts (dim, span, start, node, value, n, last_ns)
SELECT c.dim, s.span, c.minute / s.span * s.span, c.node, c.value, sum(c.n), max(c.last_ns)
FROM ({select}) c CROSS JOIN unnest({spans}) AS s(span) GROUP BY 1, 2, 3, 4, 5
ON CONFLICT (dim, span, start, node, value) DO UPDATE SET n = counts.n + excluded.n,
    last_ns = greatest(counts.last_ns, excluded.last_ns)"""

# `new`: the detections the INSERT added (RETURNING node, time_ns, rule, priority); per
# minute (dim, minute, node, value, n, last_ns), then summed into every span.
COUNT_DETECTIONS = _UPSERT.format(spans=_SPAN_ARRAY, select=f"""
SELECT 'rule' AS dim, time_ns / {MINUTE_NS} AS minute, node, coalesce(rule, '') AS value,
       count(*) AS n, max(time_ns) AS last_ns
  FROM new GROUP BY 2, 3, 4
UNION ALL
SELECT 'priority', time_ns / {MINUTE_NS}, node, coalesce(priority::text, ''), count(*),
       max(time_ns)
  FROM new GROUP BY 2, 3, 4""")

# `new`: the responses the INSERT added. A statement does not see its own inserts, so
# `responses` here holds what was stored before: a class the detection already had is not
# counted again.
COUNT_RESPONSES = _UPSERT.format(spans=_SPAN_ARRAY, select=f"""
SELECT 'outcome' AS dim, det_time_ns / {MINUTE_NS} AS minute, node, outcome_class AS value,
       count(DISTINCT det_id) AS n, max(det_time_ns) AS last_ns
  FROM new WHERE outcome_class IS NOT NULL AND NOT EXISTS (
      SELECT 1 FROM responses x WHERE x.det_id = new.det_id
         AND x.det_time_ns = new.det_time_ns AND x.outcome_class = new.outcome_class)
  GROUP BY 2, 3, 4
UNION ALL
SELECT 'dry-run', det_time_ns / {MINUTE_NS}, node,
       coalesce(policy, '') || chr(31) || coalesce(action, ''), count(*), max(det_time_ns)
  FROM new WHERE outcome_class = 'dry-run' GROUP BY 2, 3, 4""")


def cover(lo: int, hi: int, spans: tuple[int, ...] = SPANS) -> list[tuple[int, int, int]]:
    """The minutes [lo, hi) as the fewest aligned blocks: (span, first start, end) each,
    the longest spans in the middle, shorter ones at the edges."""
    if lo >= hi or not spans:
        return []
    span = spans[0]
    first, end = -(-lo // span) * span, hi // span * span
    if first >= end:
        return cover(lo, hi, spans[1:])
    return [*cover(lo, first, spans[1:]), (span, first, end), *cover(end, hi, spans[1:])]


def _where(pieces: list[tuple[int, int, int]], args: list[Any]) -> str:
    for piece in pieces:
        args += piece
    return "(" + " OR ".join(["(span = %s AND start >= %s AND start < %s)"] * len(pieces)) + ")"


def series(conn: Any, dim: str, since_ns: int, until_ns: int,
           bucket_ns: int) -> list[tuple[int, str, int]]:
    """(bucket start, value, count) of `dim` over [since, until) for every node, in buckets
    of `bucket_ns` (a whole number of minutes) counted from `since_ns`'s minute. Blocks as
    long as a bucket are read when `since_ns` is aligned to them (the console aligns it),
    minutes otherwise."""
    per = max(1, bucket_ns // MINUTE_NS)
    first = since_ns // MINUTE_NS
    spans = tuple(s for s in SPANS if per % s == 0 and first % s == 0)
    args: list[Any] = [first, per, dim]
    where = _where(cover(first, (until_ns - 1) // MINUTE_NS + 1, spans), args)
    rows = conn.execute(
        "SELECT (start - %s) / %s AS b, value, sum(n) AS n FROM counts WHERE dim = %s AND "
        f"{where} GROUP BY 1, 2", args)
    return [(since_ns + int(r["b"]) * bucket_ns, r["value"], int(r["n"])) for r in rows
            if r["n"]]


def dry_runs(conn: Any, since_ns: int | None, until_ns: int | None, node: str | None,
             policy: str | None) -> list[dict[str, Any]]:
    """Per policy, action and node: dry-run responses (n) and the newest one's detection time
    (last_ns), over the minutes of [since, until)."""
    lo = 0 if since_ns is None else since_ns // MINUTE_NS
    hi = 1 << 40 if until_ns is None else (until_ns - 1) // MINUTE_NS + 1
    args: list[Any] = []
    clauses = ["dim = 'dry-run'", _where(cover(lo, hi), args)]
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


def may_match(conn: Any, values: dict[str, str], node: str | None, since_ns: int | None,
              until_ns: int | None) -> bool:
    """False when the counters prove that no detection has every value of `values` (by dim:
    rule, outcome) on `node` in [since, until): a page filtered on a combination that never
    happened then answers at once instead of walking an index to its end. (Priority is not
    asked: a placeholder is counted with the priority it had before its alert came.)"""
    if not values:
        return True
    lo = 0 if since_ns is None else since_ns // MINUTE_NS
    hi = 1 << 40 if until_ns is None else (until_ns - 1) // MINUTE_NS + 1
    args: list[Any] = []
    asked = " OR ".join(["(dim = %s AND value = %s)"] * len(values))
    for dim, value in values.items():
        args += [dim, value]
    clauses = [f"({asked})", _where(cover(lo, hi), args)]
    if node:
        clauses.append("node = %s")
        args.append(node)
    found = conn.execute(f"SELECT DISTINCT dim FROM counts WHERE {' AND '.join(clauses)} "
                         "AND n > 0", args).fetchall()
    return len(found) == len(values)
