"""The PostgreSQL store's per-minute counters (migration 3) against a real PostgreSQL server:
they stay equal to counting the rows through records in any order, retries, an upgrade from
a database written before them, and retention; and they agree with the SQLite store's rollup,
so that the cluster console's charts and dry-run summary show what a node's console shows."""

from __future__ import annotations

import json
import time
from pathlib import Path

from enforcer.store import query as sqlite_query
from enforcer.store import rollup
from enforcer.store.importer import import_files
from enforcer.store.postgres import counts, migrations
from enforcer.store.postgres import query as pg_query
from enforcer.store.postgres.writer import PgStoreWriter
from enforcer.store.query import Filters
from enforcer.store.schema import connect as sqlite_connect

DATA = Path(__file__).resolve().parents[2] / "data" / "audit"
SEED = [DATA / "audit.jsonl", DATA / "alerts.jsonl"]  # responses first: placeholders
COUNTERS = ("SELECT dim, span, start, node, value, n, last_ns FROM counts "
            "ORDER BY 1, 2, 3, 4, 5")


def _records(paths: list[Path]) -> list[dict]:
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()
            if line.strip()]


def _write(dsn: str, node: str, records: list[dict], spool: Path, **kw) -> PgStoreWriter:
    writer = PgStoreWriter(dsn, node, spool, **kw)
    try:
        for rec in records:
            writer.submit(rec)
        assert writer.flush(timeout=60)
        assert writer.backlog == 0 and writer.rejected == 0
    finally:
        writer.close()
    return writer


def _counters(conn) -> list[tuple]:
    return conn.execute(COUNTERS).fetchall()


def _recounted(conn) -> list[tuple]:
    """The counters as counting every row again gives them (rolled back)."""
    with conn.transaction(force_rollback=True):
        conn.execute("SELECT enforcer_recount()")
        return _counters(conn)


def _migrated(dsn: str, **kw) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        migrations.migrate(conn, **kw)


def test_counters_match_the_rows_in_either_order_and_after_retries(pg_server, tmp_path):
    import psycopg

    dsns = []
    for order in (SEED, list(reversed(SEED))):
        db = pg_server.dsn(pg_server.new_database())
        _migrated(db, retention_days=0)
        records = _records(order)
        for node in ("node-a", "node-b"):
            _write(db, node, records, tmp_path / f"{len(dsns)}-{node}.db")
        # A retry of everything (a lost commit, a replayed spool) counts nothing again.
        _write(db, "node-a", records, tmp_path / f"{len(dsns)}-again.db")
        dsns.append(db)
    with psycopg.connect(dsns[0]) as a, psycopg.connect(dsns[1]) as b:
        got = _counters(a)
        assert got, "no counters written"
        assert got == _counters(b) == _recounted(a) == _recounted(b)
    per_node = {}
    for dim, span, _, node, value, n, _ in got:
        if span != 1:
            continue
        per_node.setdefault((dim, node), {}).setdefault(value, 0)
        per_node[(dim, node)][value] += n
    for node in ("node-a", "node-b"):
        assert per_node[("outcome", node)] == {"done": 2, "dry-run": 2, "failed": 1,
                                               "guard": 1, "rate-limited": 1}
        dry = {v.replace(rollup.SEP, "/"): n for v, n in per_node[("dry-run", node)].items()}
        assert dry == {"kill-readers/": 1, "kill-readers/kill": 1, "isolate-dropper/": 1,
                       "isolate-dropper/networkpolicy": 1}
        assert sum(per_node[("rule", node)].values()) == 8


def test_charts_and_dry_run_summary_agree_with_the_single_node_store(pg_db, tmp_path):
    import psycopg
    from psycopg.rows import dict_row

    _migrated(pg_db, retention_days=0)
    records = _records(SEED)
    for node in ("node-a", "node-b"):
        _write(pg_db, node, records, tmp_path / f"{node}.db")
    lite = sqlite_connect(tmp_path / "audit.db")
    import_files(lite, SEED)
    lo, hi = sqlite_query.time_bounds(lite)
    since, until = lo - lo % rollup.MINUTE_NS, hi + 1
    bucket = sqlite_query.bucket_size_ns(until - since)
    with psycopg.connect(pg_db, row_factory=dict_row) as conn:
        assert pg_query.time_bounds(conn) == (lo, hi)
        # Minute bars from any minute; longer bars from a whole bucket, as the console asks
        # for them (then hourly and daily counters are read).
        ranges = [(since, bucket)] + [(lo - lo % (m * rollup.MINUTE_NS), m * rollup.MINUTE_NS)
                                      for m in (15, 60, 1440)]
        for by in ("rule", "priority", "outcome"):
            for start, width in ranges:
                one = sorted(sqlite_query.counts_over_time(lite, by, start, until, width))
                assert one, by
                both = sorted((b, v, n // 2) for b, v, n in
                              pg_query.counts_over_time(conn, by, start, until, width))
                assert both == one, (by, width)  # every node stored them: twice the counts
        for filters in (Filters(), Filters(policy="kill-readers"),
                        Filters(since_ns=since, until_ns=since + 3 * rollup.MINUTE_NS)):
            one = [(r["policy"], r["action"], r["n"])
                   for r in sqlite_query.dry_run_summary(lite, filters)]
            for node in ("node-a", "node-b"):
                mine = pg_query.dry_run_summary(conn, Filters(**{**filters.__dict__,
                                                                 "node": node}))
                assert {r["node"] for r in mine} <= {node}
                assert sorted((r["policy"], r["action"], r["n"]) for r in mine) == \
                    sorted(one), filters
    lite.close()


def test_cover_splits_a_range_into_the_fewest_aligned_blocks():
    for lo, hi in [(0, 1), (7, 7), (7, 8), (14, 3 * 1440 + 61), (1439, 2881), (60, 120)]:
        pieces = counts.cover(lo, hi)
        minutes = [m for span, a, b in pieces for m in range(a, b)]
        assert sorted(minutes) == list(range(lo, hi)), (lo, hi)  # each minute once
        assert all(a % span == 0 and b % span == 0 for span, a, b in pieces)
    assert counts.cover(14, 3 * 1440 + 61) == [(1, 14, 15), (15, 15, 60), (60, 60, 1440),
                                                (1440, 1440, 4320), (60, 4320, 4380),
                                                (1, 4380, 4381)]


def test_upgrade_counts_the_rows_stored_before(pg_db, tmp_path):
    import psycopg

    _migrated(pg_db, retention_days=0)
    _write(pg_db, "node-a", _records(SEED), tmp_path / "s.db")
    with psycopg.connect(pg_db, autocommit=True) as conn:
        expected = _counters(conn)
        # The database as version 2 left it: the same rows, no counters.
        conn.execute("DROP TABLE counts")
        conn.execute("DROP FUNCTION enforcer_recount()")
        conn.execute("DELETE FROM enforcer_schema WHERE version = 3")
        assert migrations.migrate(conn) == [3]
        assert _counters(conn) == expected


def test_retention_drops_the_counters_of_the_days_it_drops(pg_db, tmp_path):
    import psycopg

    _migrated(pg_db, retention_days=3)
    now = time.time_ns()
    records = []
    for days_ago in (0, 1, 10, 11):
        t = now - days_ago * 86400 * 10**9
        records.append({"kind": "alert", "time_ns": t, "rule": f"R{days_ago}",
                        "priority": "Warning", "output": "x"})
        records.append({"kind": "action", "rule": f"R{days_ago}", "event_time_ns": t,
                        "start_ns": t + 1, "policy": "p", "action": "kill",
                        "outcome": "dry-run", "dry_run": True})
    # The writer's own prune would race the records: the test prunes itself.
    _write(pg_db, "node-a", records, tmp_path / "s.db", prune_interval_s=None)
    with psycopg.connect(pg_db, autocommit=True) as conn:
        rules = {v for d, _, _, _, v, _, _ in _counters(conn) if d == "rule"}
        assert rules == {"R0", "R1", "R10", "R11"}
        assert conn.execute("SELECT enforcer_prune()").fetchone()[0] == 4
        got = _counters(conn)
        assert {v for d, _, _, _, v, _, _ in got if d == "rule"} == {"R0", "R1"}
        assert got == _recounted(conn)


def test_counters_rule_out_combinations_that_never_happened(pg_db, tmp_path):
    import psycopg
    from psycopg.rows import dict_row

    _migrated(pg_db, retention_days=0)
    _write(pg_db, "node-a", _records(SEED), tmp_path / "s.db")
    _write(pg_db, "node-b", [r for r in _records(SEED) if r.get("outcome") != "failed"],
           tmp_path / "t.db")
    rule = "Read sensitive file untrusted"
    with psycopg.connect(pg_db, row_factory=dict_row) as conn:
        lo, hi = pg_query.time_bounds(conn)

        def page(**kw) -> int:
            return len(pg_query.list_detections(conn, Filters(**kw)).rows)

        assert counts.may_match(conn, {"rule": rule, "outcome": "failed"}, "node-a", lo, hi + 1)
        assert page(outcome="failed", node="node-a") == 1
        # node-b never failed: the counters say so, and the page is empty.
        assert not counts.may_match(conn, {"outcome": "failed"}, "node-b", None, None)
        assert page(outcome="failed", node="node-b") == 0
        assert page(outcome="failed") == 1
        # Nothing before the first detection, nor of a rule never seen.
        assert not counts.may_match(conn, {"rule": rule}, None, None, lo - 60 * 10**9)
        assert page(rule=rule, until_ns=lo - 60 * 10**9) == 0
        assert page(rule=rule) == 4 and page(rule="Never seen") == 0
