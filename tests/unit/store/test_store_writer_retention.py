"""The agent's writer thread, and retention by age and by size."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from enforcer.alert import Alert
from enforcer.priority import Priority
from enforcer.store import query
from enforcer.store.importer import import_files
from enforcer.store.retention import Retention, live_bytes, prune
from enforcer.store.schema import connect
from enforcer.store.writer import StoreWriter

T0 = 1_795_428_000 * 10**9

DATA = Path(__file__).resolve().parents[2] / "data" / "audit"
SEED = [DATA / "audit.jsonl", DATA / "alerts.jsonl"]

def test_writer_stores_alerts_and_records(tmp_path):
    writer = StoreWriter(tmp_path / "w.db", retention=Retention(None, None),
                         flush_interval_s=0.05)
    try:
        for i in range(300):
            trace = f"{i:032x}"
            assert writer.submit_alert(Alert(
                rule="Terminal shell in container", priority=Priority.NOTICE,
                output=f"shell {i}", output_fields={"k8s.pod.name": f"p{i}"},
                time_ns=T0 + i, hostname="node-a", trace_id=trace))
            assert writer.submit({"kind": "action", "start_ns": T0 + i + 1, "trace_id": trace,
                                  "rule": "Terminal shell in container",
                                  "event_time_ns": T0 + i, "policy": "p", "action": "kill",
                                  "outcome": "dry_run" if i % 3 else "done",
                                  "dry_run": bool(i % 3)})
        assert writer.submit({"nonsense": True})  # queued, then refused by the mapping
        assert writer.flush(timeout=30)
    finally:
        writer.close()
    assert (writer.written, writer.rejected, writer.dropped) == (600, 1, 0)
    conn = connect(tmp_path / "w.db", readonly=True)
    page = query.list_detections(conn, query.Filters(outcome="done"), limit=500)
    assert len(page.rows) == 100
    assert page.rows[0]["pod"] == "p297"


def test_submit_never_blocks_when_the_queue_is_full(tmp_path):
    writer = StoreWriter(tmp_path / "w.db", queue_size=5, flush_interval_s=0.05)
    # Hold the store's write lock so that the thread cannot drain the queue.
    blocker = sqlite3.connect(tmp_path / "w.db", timeout=30, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        results = []
        done = threading.Event()

        def flood():
            for i in range(200):
                results.append(writer.submit({"kind": "alert", "time_ns": T0 + i, "rule": "R",
                                              "output": "x", "trace_id": str(i)}))
            done.set()

        threading.Thread(target=flood).start()
        assert done.wait(10), "submit blocked on a full queue"
        assert results.count(False) == writer.dropped > 0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        writer.close()


def test_retention_by_age_drops_oldest_with_their_responses(tmp_path):
    conn = connect(tmp_path / "r.db")
    import_files(conn, SEED)
    # "now" is 10:10 on the seed's day; keep 5 minutes: 10:05:00.123 and later stay.
    removed = prune(conn, Retention(max_age_s=300, max_bytes=None),
                    now_ns=T0 + 600 * 10**9)
    assert removed == 4
    pods = [r[0] for r in conn.execute("SELECT pod FROM detections ORDER BY time_ns")]
    assert pods == ["evil-5", "xss-6", "curl-7", "web-8"]
    orphans = conn.execute("SELECT count(*) FROM responses WHERE det_id NOT IN "
                           "(SELECT id FROM detections)").fetchone()[0]
    assert orphans == 0
    assert query.list_detections(conn, query.Filters(text="shadow")).rows == []


def test_retention_by_size_keeps_the_newest(tmp_path):
    conn = connect(tmp_path / "s.db")
    log = tmp_path / "big.jsonl"
    with open(log, "w") as out:
        for i in range(3000):
            out.write(json.dumps({"kind": "alert", "time_ns": T0 + i, "rule": "R",
                                  "trace_id": f"t{i}", "output": "x" * 400,
                                  "output_fields": {"k8s.pod.name": f"p{i}"}}) + "\n")
    import_files(conn, [log])
    size = live_bytes(conn)
    prune(conn, Retention(max_age_s=None, max_bytes=size // 2), now_ns=T0)
    assert live_bytes(conn) <= size // 2
    left = [r[0] for r in conn.execute("SELECT pod FROM detections ORDER BY time_ns DESC")]
    assert 0 < len(left) < 3000
    assert left[0] == "p2999"  # the newest survive
    assert left == [f"p{i}" for i in range(2999, 2999 - len(left), -1)]
