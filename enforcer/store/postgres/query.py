"""Read the PostgreSQL store for the console: the functions of enforcer.store.query over
every node's rows, with the node as one more filter. Read-only (a role with SELECT on the
tables is enough); every value is bound, never spliced.

The charts and the dry-run summary read the per-minute counters (counts.py), as the SQLite
store's read its rollup; the list page, the one read most, walks a (column, time) index
newest first and stops after a page.
"""

from __future__ import annotations

import queue
from typing import Any

from enforcer.store.mapping import response_view
from enforcer.store.postgres import counts
from enforcer.store.query import PAGE_SIZE, Filters, Page, distinct_values_sql, time_window

_DETECTION_COLUMNS = ("rule", "priority", "namespace", "pod", "node", "container")
_RESPONSE_COLUMNS = {"policy": "policy", "action": "action", "outcome": "outcome_class"}
_TEXT = "d.search"  # the stored tsvector the det_text index covers (migrations.py)


def _conditions(filters: Filters) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    time_window(filters, "d.time_ns", clauses, args, "%s")
    for name in _DETECTION_COLUMNS:
        value = getattr(filters, name)
        if value not in (None, ""):
            clauses.append(f"d.{name} = %s")
            args.append(value)
    for name, column in _RESPONSE_COLUMNS.items():
        value = getattr(filters, name)
        if value not in (None, ""):
            clauses.append(f"EXISTS (SELECT 1 FROM responses x WHERE x.det_id = d.id AND "
                           f"x.det_time_ns = d.time_ns AND x.{column} = %s)")
            args.append(value)
    if filters.text:
        text = "".join(ch if ch >= " " else " " for ch in filters.text).strip()
        if text:
            clauses.append(f"{_TEXT} @@ plainto_tsquery('simple', regexp_replace(%s, "
                           "'[^[:alnum:]_]+', ' ', 'g'))")
            args.append(text)
    return clauses, args


def _response_scope(filters: Filters, clauses: list[str], args: list[Any]) -> None:
    """Narrow responses (as r) to the filters' time window and node: a response carries its
    detection's time and its node, so these need no join."""
    time_window(filters, "r.det_time_ns", clauses, args, "%s")
    if filters.node:
        clauses.append("r.node = %s")
        args.append(filters.node)


def _summary(column: str) -> str:
    return (f"(SELECT string_agg(DISTINCT r.{column}, ',' ORDER BY r.{column}) FROM responses r "
            f"WHERE r.det_id = d.id AND r.det_time_ns = d.time_ns)")


_LIST_COLUMNS = ("d.id, d.time_ns, d.rule, d.priority, d.output, d.namespace, d.pod, d.node, "
                 "d.container, d.hostname, d.trace_id, d.complete, "
                 f"{_summary('outcome_class')} AS outcomes, {_summary('policy')} AS policies, "
                 f"{_summary('action')} AS actions")


# A filter matching fewer rows than this is rarer than one that matches more (see below).
PLAN_CAP = 5_000


def _capped_count(conn: Any, sql: str, args: list[Any]) -> int:
    return conn.execute(f"SELECT count(*) AS n FROM ({sql} LIMIT {PLAN_CAP}) x",
                        args).fetchone()["n"]


def _response_driver(conn: Any, filters: Filters) -> str | None:
    """The policy/action/outcome filter to start a page from, when it is the rarest one set.

    Walking detections newest first and probing each one's responses is quick when matches
    are common; for a rare outcome (1 % failed) it probes a hundred detections per row
    shown. Then the page walks that filter's (column, time) index on responses instead.
    PostgreSQL's statistics cannot tell, as the rarity depends on the value.
    """
    best: tuple[int, str] | None = None
    for name, column in _RESPONSE_COLUMNS.items():
        value = getattr(filters, name)
        if value not in (None, ""):
            n = _capped_count(conn, f"SELECT 1 FROM responses WHERE {column} = %s", [value])
            if best is None or n < best[0]:
                best = (n, name)
    if best is None:
        return None
    for name in _DETECTION_COLUMNS:
        value = getattr(filters, name)
        if value not in (None, "") and _capped_count(
                conn, f"SELECT 1 FROM detections WHERE {name} = %s", [value]) < best[0]:
            return None
    return best[1]


def _rare_text(conn: Any, filters: Filters) -> bool:
    """Whether the free text matches fewer than PLAN_CAP detections (any other filter aside)."""
    if not filters.text:
        return False
    clauses, args = _conditions(Filters(text=filters.text))
    return bool(clauses) and _capped_count(
        conn, f"SELECT 1 FROM detections d WHERE {clauses[0]}", args) < PLAN_CAP


def _fetch_by_response(conn: Any, filters: Filters, name: str,
                       cursor: tuple[int, int] | None, older: bool,
                       limit: int) -> list[dict[str, Any]]:
    """Up to `limit` detections, walking the responses that match filter `name` in time
    order, in rounds of growing size, each checked against the other filters."""
    column = _RESPONSE_COLUMNS[name]
    value = getattr(filters, name)
    det_clauses, det_args = _conditions(Filters(**{**filters.__dict__, name: None}))
    cmp, order = ("<", "DESC") if older else (">", "ASC")
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    want = limit * 2
    while len(out) < limit:
        clauses, args = [f"r.{column} = %s"], [value]
        _response_scope(filters, clauses, args)
        if cursor is not None:
            clauses.append(f"(r.det_time_ns, r.det_id) {cmp} (%s, %s)")
            args += [cursor[0], cursor[1]]
        keys = conn.execute(
            f"SELECT r.det_time_ns AS t, r.det_id AS i FROM responses r WHERE "
            f"{' AND '.join(clauses)} ORDER BY r.det_time_ns {order}, r.det_id {order} "
            "LIMIT %s", [*args, want]).fetchall()
        if not keys:
            break
        where = " AND ".join(["(d.time_ns, d.id) IN (SELECT * FROM unnest(%s::bigint[], "
                              "%s::bigint[]))", *det_clauses])
        rows = conn.execute(
            f"SELECT {_LIST_COLUMNS} FROM (SELECT * FROM detections d WHERE {where} "
            f"ORDER BY d.time_ns {order}, d.id {order} LIMIT %s) d "
            f"ORDER BY d.time_ns {order}, d.id {order}",
            [[k["t"] for k in keys], [k["i"] for k in keys], *det_args,
             limit - len(out)]).fetchall()
        for row in rows:
            if row["id"] not in seen:
                seen.add(row["id"])
                out.append(dict(row))
        if len(keys) < want:
            break
        cursor = (keys[-1]["t"], keys[-1]["i"])
        want = min(want * 4, 20_000)
    return out[:limit]


def list_detections(conn: Any, filters: Filters, *, before: tuple[int, int] | None = None,
                    after: tuple[int, int] | None = None, limit: int = PAGE_SIZE) -> Page:
    """A page of detections matching `filters`, newest first (see store.query)."""
    older = after is None
    cursor = after if after is not None else before
    order = "DESC" if older else "ASC"
    counted = {dim: getattr(filters, dim) for dim in ("rule", "outcome")
               if getattr(filters, dim) not in (None, "")}
    if not counts.may_match(conn, counted, filters.node, filters.since_ns, filters.until_ns):
        return Page(rows=[])
    driver = _response_driver(conn, filters)
    if driver is not None:
        rows = _fetch_by_response(conn, filters, driver, cursor, older, limit + 1)
    else:
        clauses, args = _conditions(filters)
        if cursor is not None:
            clauses.append(f"(d.time_ns, d.id) {'<' if older else '>'} (%s, %s)")
            args += [cursor[0], cursor[1]]
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        # A rare word is found through its text index and its few matches sorted: walking
        # time order would check a thousand rows per match (`+ 0` keeps the planner from
        # the walk; the order is the same).
        key = "d.time_ns + 0" if _rare_text(conn, filters) else "d.time_ns"
        # The summaries are computed for the page's rows only, after the limit.
        sql = (f"SELECT {_LIST_COLUMNS} FROM (SELECT * FROM detections d {where} "
               f"ORDER BY {key} {order}, d.id {order} LIMIT %s) d "
               f"ORDER BY d.time_ns {order}, d.id {order}")
        rows = [dict(r) for r in conn.execute(sql, [*args, limit + 1]).fetchall()]
    return Page.from_rows(rows, limit, older=older, before=before)


def get_detection(conn: Any, det_id: int) -> dict[str, Any] | None:
    """One detection with its output fields and every decision and action, in order."""
    row = conn.execute(
        f"SELECT d.*, {_summary('outcome_class')} AS outcomes, {_summary('policy')} AS "
        f"policies, {_summary('action')} AS actions FROM detections d WHERE d.id = %s "
        "ORDER BY d.complete DESC LIMIT 1", (det_id,)).fetchone()
    if row is None:
        return None
    det = dict(row)
    det["output_fields"] = det["output_fields"] or {}
    det["tags"] = det["tags"] or []
    responses = []
    for r in conn.execute("SELECT * FROM responses WHERE det_id = %s AND det_time_ns = %s "
                          "ORDER BY time_ns, id", (det_id, det["time_ns"])):
        item = dict(r)
        record = item.pop("record")
        item.update(response_view(record if isinstance(record, dict) else {}))
        responses.append(item)
    det["responses"] = responses
    return det


_NOT_SHADOWED = ("(r.kind = 'action' OR NOT EXISTS (SELECT 1 FROM responses a WHERE "
                 "a.det_id = r.det_id AND a.det_time_ns = r.det_time_ns AND a.kind = 'action' "
                 "AND a.policy IS NOT DISTINCT FROM r.policy))")


def _dry_run_where(filters: Filters) -> tuple[list[str], list[Any]]:
    clauses = ["r.outcome_class = 'dry-run'", _NOT_SHADOWED]
    args: list[Any] = []
    _response_scope(filters, clauses, args)
    return clauses, args


def dry_run_summary(conn: Any, filters: Filters) -> list[dict[str, Any]]:
    """Per policy, action and node: how many times a dry run would have acted, and when
    last, from the per-minute counters (minute precision; see store.query). A policy's
    decisions are listed only where it has no action records on that node."""
    rows = counts.dry_runs(conn, filters.since_ns, filters.until_ns, filters.node,
                           filters.policy)
    with_actions = {(r["policy"], r["node"]) for r in rows if r["action"]}
    return [r for r in rows if r["action"] or (r["policy"], r["node"]) not in with_actions]


def dry_run_examples(conn: Any, policy: str, filters: Filters,
                     limit: int = 20) -> list[dict[str, Any]]:
    """The latest dry-run responses of one policy: what exactly would have been done."""
    clauses, args = _dry_run_where(filters)
    if policy:  # as a plain comparison, so that the (policy, time) index walks newest first
        clauses.append("r.policy = %s")
        args.append(policy)
    else:
        clauses.append("coalesce(r.policy, '') = ''")
    sql = ("SELECT r.id, r.det_id, r.det_time_ns, r.kind, r.action, r.record, r.outcome, "
           "r.node, d.rule, d.namespace, d.pod FROM responses r LEFT JOIN detections d "
           "ON d.id = r.det_id AND d.time_ns = r.det_time_ns WHERE " + " AND ".join(clauses)
           + " ORDER BY r.det_time_ns DESC, r.id DESC LIMIT %s")
    out = []
    for r in conn.execute(sql, [*args, limit]):
        item = dict(r)
        record = item.pop("record")
        item.update(response_view(record if isinstance(record, dict) else {}))
        out.append(item)
    return out


def time_bounds(conn: Any) -> tuple[int, int] | None:
    """Oldest and newest detection time, or None for an empty store."""
    row = conn.execute("SELECT min(time_ns) AS lo, max(time_ns) AS hi FROM detections"
                       ).fetchone()
    return None if row["lo"] is None else (row["lo"], row["hi"])


def counts_over_time(conn: Any, by: str, since_ns: int, until_ns: int,
                     bucket_ns: int) -> list[tuple[int, str, int]]:
    """(bucket start, series value, detections) for `by` in rule, priority or outcome, over
    every node, from the per-minute counters (`bucket_ns`: a whole number of minutes)."""
    if by not in ("rule", "priority", "outcome"):
        raise ValueError(f"cannot count by {by!r}: expected rule, priority or outcome")
    return counts.series(conn, by, since_ns, until_ns, bucket_ns)


def distinct_values(conn: Any, column: str, limit: int = 200) -> list[str]:
    """Values seen for a filter column, for the filter form's choices."""
    return [str(r["x"]) for r in conn.execute(distinct_values_sql(column, "%s"), (limit,))]


class ReadPool:
    """A few read-only connections kept open between requests (connecting costs a password
    exchange each time); connections that broke are dropped, not returned."""

    def __init__(self, dsn: str, size: int = 4, statement_timeout_s: float = 15.0):
        self.dsn = dsn
        self.statement_timeout_s = statement_timeout_s
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue(maxsize=size)

    def get(self) -> Any:
        """An open connection: an idle one, or a new one (raises psycopg.Error)."""
        import psycopg  # noqa: PLC0415

        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                break
            try:  # the server may have restarted since: one round trip to know
                conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                conn.close()
        from psycopg.rows import dict_row  # noqa: PLC0415

        from enforcer.store.postgres import migrations  # noqa: PLC0415

        conn = psycopg.connect(
            self.dsn, autocommit=True, row_factory=dict_row, connect_timeout=10,
            application_name="enforcer-console",
            options=(f"-c statement_timeout={int(self.statement_timeout_s * 1000)} "
                     "-c default_transaction_read_only=on"))
        try:
            migrations.check(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def put(self, conn: Any) -> None:
        """Give a connection back after use."""
        if conn.closed or conn.broken:
            return
        try:
            self._idle.put_nowait(conn)
        except queue.Full:
            conn.close()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
