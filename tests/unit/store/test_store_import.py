"""`enforcer audit import` and the importer behind it: bad lines reported and skipped."""

from __future__ import annotations

import subprocess
from pathlib import Path

from enforcer.store import query
from enforcer.store.importer import import_files
from enforcer.store.query import Filters
from enforcer.store.schema import connect, suspend_text_index

DATA = Path(__file__).resolve().parents[2] / "data" / "audit"
AUDIT, ALERTS, CORRUPT = (DATA / n for n in ("audit.jsonl", "alerts.jsonl", "corrupt.jsonl"))
SEED = [AUDIT, ALERTS]


def _counts(conn):
    return (conn.execute("SELECT count(*) FROM detections").fetchone()[0],
            conn.execute("SELECT count(*) FROM responses").fetchone()[0])


def test_seed_imports_every_record(seeded):
    assert _counts(seeded) == (8, 20)
    assert seeded.execute("SELECT count(*) FROM detections WHERE complete = 0").fetchone()[0] == 0


def test_corrupt_lines_are_reported_by_number_and_nothing_else_is_lost(tmp_path):
    conn = connect(tmp_path / "a.db")
    report = import_files(conn, [CORRUPT, ALERTS])
    got = [(d.line, d.message) for d in report.skipped]
    assert got == [(3, "invalid JSON: Expecting value; line skipped"),
                   (6, "expected a JSON object, got list; line skipped"),
                   (23, "truncated JSON record; line skipped")]
    assert all(d.file == str(CORRUPT) for d in report.skipped)
    assert report.imported == 28
    # The same store as from the clean seed: every good line made it.
    clean = connect(tmp_path / "b.db")
    import_files(clean, SEED)
    dump = "SELECT key, rule, outcomes, policies, actions FROM detections ORDER BY key"
    assert [tuple(r) for r in conn.execute(dump)] == [tuple(r) for r in clean.execute(dump)]
    assert _counts(conn) == _counts(clean)


def test_reimport_adds_nothing(seeded):
    before = _counts(seeded)
    again = import_files(seeded, SEED)
    assert again.imported == 28
    assert _counts(seeded) == before


def test_responses_before_their_alert_are_joined_when_it_arrives(seeded):
    # web-8 has no trace id: rule + event time join the responder's records to the alert.
    row = seeded.execute("SELECT * FROM detections WHERE pod = 'web-8'").fetchone()
    assert row["complete"] == 1 and row["rule"] == "Terminal shell in container"
    assert row["outcomes"] == "done" and row["actions"] == "kill"
    times = {r[0] for r in seeded.execute("SELECT det_time_ns FROM responses WHERE det_id = ?",
                                          (row["id"],))}
    assert times == {row["time_ns"]}


def test_cli_import_reports_lines_and_exits_1(tmp_path, enforcer_cmd, cli_env):
    store = tmp_path / "s.db"
    out = subprocess.run(enforcer_cmd + ["audit", "import", str(CORRUPT), str(ALERTS),
                                         "--store", str(store), "--max-age-days", "0"],
                         capture_output=True, text=True, env=cli_env)
    assert out.returncode == 1, out.stderr
    assert out.stderr.splitlines() == [
        f"{CORRUPT}:3:29: invalid JSON: Expecting value; line skipped",
        f"{CORRUPT}:6:1: expected a JSON object, got list; line skipped",
        f"{CORRUPT}:23:72: truncated JSON record; line skipped"]
    assert "imported 28 records" in out.stdout and "skipped 3 line(s)" in out.stdout
    assert "Traceback" not in out.stderr


def test_cli_import_clean_file_exits_0(tmp_path, enforcer_cmd, cli_env):
    out = subprocess.run(enforcer_cmd + ["audit", "import", *map(str, SEED), "--store",
                                         str(tmp_path / "s.db"), "--max-age-days", "0"],
                         capture_output=True, text=True, env=cli_env)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""


def test_cli_import_missing_file_is_a_usage_error(tmp_path, enforcer_cmd, cli_env):
    out = subprocess.run(enforcer_cmd + ["audit", "import", str(tmp_path / "nope.jsonl"),
                                         "--store", str(tmp_path / "s.db")],
                         capture_output=True, text=True, env=cli_env)
    assert out.returncode == 2
    assert "nope.jsonl: no such file" in out.stderr


def test_cli_import_into_a_non_store_is_an_environment_error(tmp_path, enforcer_cmd, cli_env):
    bogus = tmp_path / "not-a-db"
    bogus.write_text("hello, I am not SQLite\n" * 100)
    out = subprocess.run(enforcer_cmd + ["audit", "import", str(AUDIT), "--store", str(bogus)],
                         capture_output=True, text=True, env=cli_env)
    assert out.returncode == 3
    assert "not a usable audit store" in out.stderr and "Traceback" not in out.stderr


def test_bulk_import_with_workers_equals_the_inline_import(tmp_path):
    inline = connect(tmp_path / "inline.db")
    import_files(inline, SEED, workers=0)
    bulk = connect(tmp_path / "bulk.db")
    report = import_files(bulk, [CORRUPT, ALERTS], workers=1)  # decoding in a process
    assert [d.line for d in report.skipped] == [3, 6, 23]
    dump = ("SELECT key, rule, priority, output, outcomes, policies, actions, complete "
            "FROM detections ORDER BY key")
    assert [tuple(r) for r in bulk.execute(dump)] == [tuple(r) for r in inline.execute(dump)]
    # The text index was built at the end, and indexing row by row is back on.
    assert pods(query.list_detections(bulk, Filters(text="shadow"))) == ["api-3", "api-2"]
    triggers = {r[0] for r in bulk.execute("SELECT name FROM sqlite_master WHERE type = "
                                           "'trigger'")}
    assert {"det_fts_insert", "det_fts_delete", "det_fts_update"} <= triggers


def test_an_interrupted_bulk_import_is_indexed_on_next_open(tmp_path):
    path = tmp_path / "s.db"
    conn = connect(path)
    suspend_text_index(conn)
    import_files(conn, SEED, workers=0)  # as if the bulk import died before the end
    assert query.list_detections(conn, Filters(text="shadow")).rows == []
    conn.close()
    conn = connect(path)
    assert pods(query.list_detections(conn, Filters(text="shadow"))) == ["api-3", "api-2"]


def pods(page):
    return [r["pod"] for r in page.rows]


def test_the_agents_own_records_are_passed_over(tmp_path):
    """A hot reload and a Kubernetes Event that could not be created are in the audit log
    but belong to no detection: neither imported nor reported as bad lines."""
    import json

    from enforcer.audit.record import K8S_EVENT, RELOAD, AuditRecord

    log = tmp_path / "audit.jsonl"
    lines = AUDIT.read_text().splitlines()
    lines.insert(1, json.dumps(AuditRecord(RELOAD, "r1", "applied", reason="digest 1").as_dict()))
    lines.insert(3, json.dumps(AuditRecord(
        K8S_EVENT, "m1", "failed", rule="Terminal shell in container", policy="p",
        target={"namespace": "prod", "pod": "web-1"}, error="403").as_dict()))
    log.write_text("\n".join(lines) + "\n")
    conn = connect(tmp_path / "a.db")
    report = import_files(conn, [log, ALERTS])
    assert report.skipped == []
    assert _counts(conn) == (8, 20)  # what the seed alone gives
