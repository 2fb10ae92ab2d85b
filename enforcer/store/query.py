"""Read the audit store: filtered pages of detections, one detection in full, dry-run
decisions per policy, and counts over time. Read-only; every value is bound, never spliced."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, fields
from typing import Any

from enforcer.store import rollup
from enforcer.store.mapping import response_view

PAGE_SIZE = 50

# Filters answered by a detections column, each with a (column, time) index.
_DETECTION_COLUMNS = ("rule", "priority", "namespace", "pod", "node", "container")
# Filters answered by the responses of a detection (a detection has many).
_RESPONSE_COLUMNS = {"policy": "policy", "action": "action", "outcome": "outcome_class"}


@dataclass(frozen=True)
class Filters:
    """What the detections list is narrowed to; None means "any"."""

    since_ns: int | None = None
    until_ns: int | None = None
    rule: str | None = None
    priority: int | None = None
    namespace: str | None = None
    pod: str | None = None
    node: str | None = None
    container: str | None = None
    policy: str | None = None
    action: str | None = None
    outcome: str | None = None
    text: str | None = None

    def active(self) -> dict[str, Any]:
        """The filters that are set, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) not in (None, "")}


@dataclass
class Page:
    """One page of detections, newest first, with keyset cursors to move on."""

    rows: list[dict[str, Any]]
    older: tuple[int, int] | None = None  # (time_ns, id) of the last row when more follow
    newer: tuple[int, int] | None = None  # (time_ns, id) of the first row when newer exist

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], limit: int, *, older: bool,
                  before: tuple[int, int] | None) -> Page:
        """The page of up to `limit + 1` rows fetched away from the cursor (newest first when
        `older`, oldest first otherwise), with its cursors; the extra row says more follow."""
        more = len(rows) > limit
        rows = rows[:limit]
        if not older:
            rows.reverse()
        page = cls(rows=rows)
        if rows:
            first, last = rows[0], rows[-1]
            if (older and more) or not older:
                page.older = (last["time_ns"], last["id"])
            if before is not None or (not older and more):
                page.newer = (first["time_ns"], first["id"])
        return page


def fts_query(text: str) -> str | None:
    """Free text as an FTS5 query: every word must appear; no FTS syntax is interpreted."""
    # Control characters (a NUL ends SQLite's reading of the query) cannot be searched for.
    text = "".join(ch if ch >= " " else " " for ch in text)
    words = [w for w in text.split() if w]
    if not words:
        return None
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


# A driver whose matches are fewer than this is read whole and sorted; otherwise the page
# walks an index in time order and stops after one page.
PLAN_CAP = 5_000


@dataclass(frozen=True)
class _Driver:
    """Where a page query starts: an index, and whether it yields rows already in order."""

    kind: str  # "time", "detection", "response" or "text"
    name: str | None = None


def _capped_count(conn: sqlite3.Connection, sql: str, args: list[Any]) -> int:
    return conn.execute(f"SELECT count(*) FROM ({sql} LIMIT {PLAN_CAP})", args).fetchone()[0]


def _choose_driver(conn: sqlite3.Connection, filters: Filters) -> _Driver:
    """Start from the most selective filter, judged by a count capped at PLAN_CAP.

    SQLite has no per-value statistics here, so without this a rare rule would be found by
    walking a million rows in time order, or a common one by sorting a million rows.
    """
    best: tuple[int, _Driver] | None = None
    for name in _DETECTION_COLUMNS:
        value = getattr(filters, name)
        if value not in (None, ""):
            n = _capped_count(conn, f"SELECT 1 FROM detections WHERE {name} = ?", [value])
            if best is None or n < best[0]:
                best = (n, _Driver("detection", name))
    for name, column in _RESPONSE_COLUMNS.items():
        value = getattr(filters, name)
        if value not in (None, ""):
            n = _capped_count(conn, f"SELECT 1 FROM responses WHERE {column} = ?", [value])
            if best is None or n < best[0]:
                best = (n, _Driver("response", name))
    match = fts_query(filters.text) if filters.text else None
    if match:
        n = _capped_count(conn, "SELECT 1 FROM detections_fts WHERE detections_fts MATCH ?",
                          [match])
        if best is None or n < best[0]:
            best = (n, _Driver("text"))
    if best is None:
        return _Driver("time")
    count, driver = best
    if count >= PLAN_CAP and driver.kind != "response":
        # Every filter is common: walking time order finds a page of matches quickly.
        return _Driver("time") if driver.kind == "text" else driver
    return driver


def time_window(filters: Filters, column: str, clauses: list[str], args: list[Any],
                mark: str = "?") -> None:
    """Add the filters' [since, until) window on `column` to the WHERE clauses (`mark`: the
    driver's parameter placeholder)."""
    if filters.since_ns is not None:
        clauses.append(f"{column} >= {mark}")
        args.append(filters.since_ns)
    if filters.until_ns is not None:
        clauses.append(f"{column} < {mark}")
        args.append(filters.until_ns)


def _conditions(filters: Filters, driver: _Driver) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    time_window(filters, "d.time_ns", clauses, args)
    for name in _DETECTION_COLUMNS:
        value = getattr(filters, name)
        if value not in (None, ""):
            # A unary + keeps SQLite from using this column's index when another drives.
            plus = "" if driver == _Driver("detection", name) else "+"
            clauses.append(f"{plus}d.{name} = ?")
            args.append(value)
    for name, column in _RESPONSE_COLUMNS.items():
        value = getattr(filters, name)
        if value in (None, ""):
            continue
        if driver == _Driver("response", name):
            clauses.append(f"r.{column} = ?")
        else:
            # det_time_ns = d.time_ns lets the (column, det_time_ns, det_id) index answer.
            clauses.append(f"EXISTS (SELECT 1 FROM responses x WHERE x.{column} = ? "
                           "AND x.det_time_ns = d.time_ns AND x.det_id = d.id)")
        args.append(value)
    match = fts_query(filters.text) if filters.text else None
    if match:
        # The matches are gathered once per query into a temporary index and looked up per
        # row; probing FTS row by row (EXISTS ... MATCH) re-runs the query each time, which
        # costs seconds for a rare phrase on a common rule. The + keeps the set from driving
        # the query unless the plan says so.
        plus = "" if driver.kind == "text" else "+"
        clauses.append(f"{plus}d.id IN (SELECT rowid FROM detections_fts "
                       "WHERE detections_fts MATCH ?)")
        args.append(match)
    return clauses, args


_LIST_COLUMNS = ("d.id, d.time_ns, d.rule, d.priority, d.output, d.namespace, d.pod, d.node, "
                 "d.container, "
                 "d.hostname, d.trace_id, d.outcomes, d.policies, d.actions, d.complete")


def _fetch(conn: sqlite3.Connection, filters: Filters, driver: _Driver,
           cursor: tuple[int, int] | None, older: bool, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` distinct detections beyond `cursor`, in the page's direction."""
    clauses, args = _conditions(filters, driver)
    order = "DESC" if older else "ASC"
    cmp = "<" if older else ">"
    if driver.kind == "response":
        t, i = "r.det_time_ns", "r.det_id"
        source = "responses r JOIN detections d ON d.id = r.det_id"
    else:
        t, i = "d.time_ns", "d.id"
        source = "detections d"
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    while len(out) < limit:
        where = list(clauses)
        where_args = list(args)
        if cursor is not None:
            where.append(f"({t} {cmp} ? OR ({t} = ? AND {i} {cmp} ?))")
            where_args += [cursor[0], cursor[0], cursor[1]]
        sql = (f"SELECT {_LIST_COLUMNS} FROM {source} "
               f"{'WHERE ' + ' AND '.join(where) if where else ''} "
               f"ORDER BY {t} {order}, {i} {order} LIMIT ?")
        want = limit - len(out)
        if driver.kind == "response":
            # A detection comes once per matching response: ask for enough rows that one
            # round usually does (each round re-runs the query, text search included).
            want *= 4
        rows = conn.execute(sql, [*where_args, want]).fetchall()
        for row in rows:
            # A detection with several matching responses comes once per response.
            if row["id"] not in seen and len(out) < limit:
                seen.add(row["id"])
                out.append(dict(row))
        if len(rows) < want:
            break
        cursor = (rows[-1]["time_ns"], rows[-1]["id"])
    return out


def list_detections(conn: sqlite3.Connection, filters: Filters, *,
                    before: tuple[int, int] | None = None,
                    after: tuple[int, int] | None = None,
                    limit: int = PAGE_SIZE) -> Page:
    """A page of detections matching `filters`, newest first.

    `before` pages to rows older than a (time_ns, id) cursor, `after` to newer ones.
    """
    driver = _choose_driver(conn, filters)
    older = after is None
    rows = _fetch(conn, filters, driver, after if after is not None else before, older,
                  limit + 1)
    return Page.from_rows(rows, limit, older=older, before=before)


def _loads(text: str | None, default: Any) -> Any:
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def get_detection(conn: sqlite3.Connection, det_id: int) -> dict[str, Any] | None:
    """One detection with its output fields and every decision and action, in order."""
    row = conn.execute("SELECT * FROM detections WHERE id = ?", (det_id,)).fetchone()
    if row is None:
        return None
    det = dict(row)
    det["output_fields"] = _loads(det["output_fields"], {})
    det["tags"] = _loads(det["tags"], [])
    responses = []
    for r in conn.execute("SELECT * FROM responses WHERE det_id = ? ORDER BY time_ns, id",
                          (det_id,)):
        item = dict(r)
        record = _loads(item.pop("record"), {})
        item.update(response_view(record if isinstance(record, dict) else {}))
        responses.append(item)
    det["responses"] = responses
    return det


# A policy decision is listed only when its policy has no action records for that detection:
# otherwise the actions say more precisely what would have been done.
_NOT_SHADOWED = ("(r.kind = 'action' OR NOT EXISTS (SELECT 1 FROM responses a "
                 "WHERE a.det_id = r.det_id AND a.kind = 'action' AND a.policy IS r.policy))")


def dry_run_summary(conn: sqlite3.Connection, filters: Filters) -> list[dict[str, Any]]:
    """Per policy and action: how many times a dry run would have acted, and when last.

    A policy's dry-run decisions are listed only when it has no dry-run action records
    (the actions say more precisely what would have been done). Minute precision.
    """
    rows = []
    for value, n, last_ns in rollup.totals(conn, "dry-run", filters.since_ns,
                                          filters.until_ns):
        policy, _, action = value.partition(rollup.SEP)
        if filters.policy and policy != filters.policy:
            continue
        rows.append({"policy": policy, "action": action, "n": n, "last_ns": last_ns})
    with_actions = {r["policy"] for r in rows if r["action"]}
    return [r for r in rows if r["action"] or r["policy"] not in with_actions]


def dry_run_examples(conn: sqlite3.Connection, policy: str, filters: Filters,
                     limit: int = 20) -> list[dict[str, Any]]:
    """The latest dry-run responses of one policy: what exactly would have been done."""
    clauses = ["r.outcome_class = 'dry-run'", "r.policy = ?", _NOT_SHADOWED]
    args: list[Any] = [policy]
    time_window(filters, "r.det_time_ns", clauses, args)
    if filters.node:
        clauses.append("d.node = ?")
        args.append(filters.node)
    sql = ("SELECT r.id, r.det_id, r.det_time_ns, r.kind, r.action, r.record, "
           "r.outcome, d.rule, d.namespace, d.pod, d.node FROM responses r "
           "JOIN detections d ON d.id = r.det_id WHERE " + " AND ".join(clauses) +
           " ORDER BY r.det_time_ns DESC, r.id DESC LIMIT ?")
    out = []
    for r in conn.execute(sql, [*args, limit]):
        item = dict(r)
        record = _loads(item.pop("record"), {})
        item.update(response_view(record if isinstance(record, dict) else {}))
        out.append(item)
    return out


_BUCKETS_S = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)


def bucket_size_ns(span_ns: int, max_buckets: int = 60) -> int:
    """A round bucket width that splits `span_ns` into at most `max_buckets` bars."""
    for seconds in _BUCKETS_S:
        if span_ns / (seconds * 1_000_000_000) <= max_buckets:
            return seconds * 1_000_000_000
    return _BUCKETS_S[-1] * 1_000_000_000


def time_bounds(conn: sqlite3.Connection) -> tuple[int, int] | None:
    """Oldest and newest detection time, or None for an empty store."""
    row = conn.execute("SELECT min(time_ns), max(time_ns) FROM detections").fetchone()
    return None if row[0] is None else (row[0], row[1])


def counts_over_time(conn: sqlite3.Connection, by: str, since_ns: int, until_ns: int,
                     bucket_ns: int) -> list[tuple[int, str, int]]:
    """(bucket start, series value, detections) for `by` in rule, priority or outcome.

    Read from the per-minute counters: `since_ns` is taken from the start of its minute and
    `bucket_ns` must be a whole number of minutes.
    """
    if by not in ("rule", "priority", "outcome"):
        raise ValueError(f"cannot count by {by!r}: expected rule, priority or outcome")
    return rollup.series(conn, by, since_ns, until_ns, bucket_ns)


def distinct_values(conn: sqlite3.Connection, column: str, limit: int = 200) -> list[str]:
    """Values seen for a filter column, for the filter form's choices."""
    return [str(r[0]) for r in conn.execute(distinct_values_sql(column), (limit,))]


def distinct_values_sql(column: str, mark: str = "?") -> str:
    """The query for `distinct_values` (its one parameter, the limit, is `mark`)."""
    if column in _DETECTION_COLUMNS:
        table, col = "detections", column
    elif column in _RESPONSE_COLUMNS:
        table, col = "responses", _RESPONSE_COLUMNS[column]
    else:
        raise ValueError(f"unknown filter column {column!r}")
    # Index skip-scan via a recursive walk over the (column, time) index: a few probes per
    # value, cheap even over millions of rows.
    return (f"WITH RECURSIVE v(x) AS (SELECT min({col}) FROM {table} UNION ALL "
            f"SELECT (SELECT min({col}) FROM {table} WHERE {col} > v.x) FROM v "
            f"WHERE v.x IS NOT NULL) SELECT x FROM v WHERE x IS NOT NULL LIMIT {mark}")
