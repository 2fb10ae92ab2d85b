"""The per-minute counters stay equal to counting the rows, through re-imports, records in
any order, the live writer and retention."""

from __future__ import annotations

import json
from pathlib import Path

from enforcer.store import rollup
from enforcer.store.importer import import_files
from enforcer.store.retention import Retention, prune
from enforcer.store.schema import connect

DATA = Path(__file__).resolve().parents[2] / "data" / "audit"
SEED = [DATA / "audit.jsonl", DATA / "alerts.jsonl"]
T0 = 1_795_428_000 * 10**9


def counters(conn):
    return sorted(tuple(r) for r in conn.execute("SELECT dim, minute, value, n FROM rollup"))


def recounted(conn):
    conn.execute("BEGIN")
    rollup.rebuild(conn)
    got = counters(conn)
    conn.execute("ROLLBACK")
    return got


def test_counters_match_the_rows_in_either_order_and_after_reimport(tmp_path):
    a = connect(tmp_path / "a.db")
    import_files(a, SEED)
    b = connect(tmp_path / "b.db")
    import_files(b, list(reversed(SEED)))
    import_files(b, SEED)  # again: nothing new
    assert counters(a) == counters(b) == recounted(a)
    outcome = {(v, n) for d, _, v, n in counters(a) if d == "outcome"}
    assert outcome == {("done", 1), ("dry-run", 1), ("failed", 1), ("guard", 1),
                       ("rate-limited", 1)} | {("done", 1)}
    dry = {v.replace(rollup.SEP, "/"): n for d, _, v, n in counters(a) if d == "dry-run"}
    assert dry == {"kill-readers/": 1, "kill-readers/kill": 1, "isolate-dropper/": 1,
                   "isolate-dropper/networkpolicy": 1}


def test_counters_follow_retention(tmp_path):
    conn = connect(tmp_path / "r.db")
    log = tmp_path / "many.jsonl"
    with open(log, "w") as out:
        for i in range(600):  # ten a minute for an hour, each with a dry-run action
            t = T0 + i * 6 * 10**9
            out.write(json.dumps({"kind": "alert", "time_ns": t, "rule": f"R{i % 3}",
                                  "priority": "Warning", "output": "x"}) + "\n")
            out.write(json.dumps({"kind": "action", "rule": f"R{i % 3}", "event_time_ns": t,
                                  "start_ns": t + 1, "policy": "p", "action": "kill",
                                  "outcome": "dry-run", "dry_run": True}) + "\n")
    import_files(conn, [log])
    assert counters(conn) == recounted(conn)
    # Keep 30.5 minutes: retention cuts through a minute, which is counted again.
    prune(conn, Retention(max_age_s=30.5 * 60, max_bytes=None), now_ns=T0 + 3600 * 10**9)
    assert counters(conn) == recounted(conn)
    total = sum(n for d, _, _, n in counters(conn) if d == "rule")
    assert total == conn.execute("SELECT count(*) FROM detections").fetchone()[0] < 600
