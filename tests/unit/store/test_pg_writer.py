"""The PostgreSQL store's writer against a real PostgreSQL server (tests/pg_server.py):
schema migrations, batches by COPY with stable ids, the spool while the database is down."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enforcer.store.postgres import migrations
from enforcer.store.postgres.writer import PgStoreWriter, StoreUnavailable

DATA = Path(__file__).resolve().parents[2] / "data" / "audit"


def _records() -> list[dict]:
    lines = (DATA / "audit.jsonl").read_text().splitlines()
    lines += (DATA / "alerts.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _migrated(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        migrations.migrate(conn, retention_days=0)


def _count(dsn: str, sql: str, *args) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchone()[0]


def _wait(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_migrate_is_versioned_and_idempotent(pg_db):
    import psycopg

    with psycopg.connect(pg_db, autocommit=True) as conn:
        with pytest.raises(migrations.SchemaError, match="enforcer store migrate"):
            migrations.check(conn)
        assert migrations.migrate(conn) == [m.version for m in migrations.MIGRATIONS]
        assert migrations.migrate(conn) == []
        migrations.check(conn)
        assert migrations.current_version(conn) == migrations.LATEST


def test_agent_refuses_a_database_without_the_schema(pg_db, tmp_path):
    with pytest.raises(StoreUnavailable, match="enforcer store migrate"):
        PgStoreWriter(pg_db, "node-a", tmp_path / "spool.db")


def test_writes_every_record_once_tagged_with_its_node(pg_db, tmp_path):
    _migrated(pg_db)
    records = _records()
    writer = PgStoreWriter(pg_db, "node-a", tmp_path / "spool.db")
    try:
        for rec in records:
            writer.submit(rec)
        # The same records again, as a retry after a lost commit would send them.
        for rec in records:
            writer.submit(rec)
        assert writer.flush()
        assert _wait(lambda: writer.backlog == 0)
    finally:
        writer.close()
    responses = sum(1 for r in records if r.get("kind") != "alert" and "output" not in r)
    assert _count(pg_db, "SELECT count(*) FROM responses WHERE node = 'node-a'") == responses
    assert _count(pg_db, "SELECT count(*) FROM detections WHERE node = 'node-a' "
                         "AND complete") == 8
    assert _count(pg_db, "SELECT count(*) FROM detections WHERE NOT complete") == 0
    # Another node's identical records are its own rows.
    other = PgStoreWriter(pg_db, "node-b", tmp_path / "spool-b.db")
    try:
        for rec in records:
            other.submit(rec)
        assert other.flush()
    finally:
        other.close()
    assert _count(pg_db, "SELECT count(*) FROM responses") == 2 * responses
    assert _count(pg_db, "SELECT count(DISTINCT node) FROM detections") == 2


def test_spools_while_the_database_is_down_and_replays_in_order(pg_bindir, tmp_path):
    from tests.pg_server import running_server

    with running_server(pg_bindir) as server:
        dsn = server.dsn(server.new_database())
        _migrated(dsn)
        writer = PgStoreWriter(dsn, "node-a", tmp_path / "spool.db", retry_s=0.2,
                               connect_timeout_s=2)
        try:
            server.stop()
            records = [_response(i) for i in range(500)]
            for rec in records:
                writer.submit(rec)
            assert writer.flush()
            assert writer.spool.count == 500  # nothing reached the database
            assert writer.backlog == 500
            assert not writer.connected
            server.start()
            assert _wait(lambda: writer.backlog == 0)
        finally:
            writer.close()
        assert _count(dsn, "SELECT count(*) FROM responses") == 500
        # In the order they were made: the rows' physical order follows the inserts.
        import psycopg

        with psycopg.connect(dsn) as conn:
            seq = [r[0] for r in conn.execute(
                "SELECT (record->>'index')::int FROM responses ORDER BY ctid")]
        assert seq == list(range(500))


def test_spool_survives_a_restart_of_the_agent(pg_bindir, tmp_path):
    from tests.pg_server import running_server

    with running_server(pg_bindir) as server:
        dsn = server.dsn(server.new_database())
        _migrated(dsn)
        server.stop()
        writer = PgStoreWriter(dsn, "node-a", tmp_path / "spool.db", retry_s=60)
        for i in range(100):
            writer.submit(_response(i))
        writer.close()  # stopped with everything spooled
        server.start()
        again = PgStoreWriter(dsn, "node-a", tmp_path / "spool.db", retry_s=0.2)
        try:
            assert again.spool.count == 100
            assert _wait(lambda: again.backlog == 0)
        finally:
            again.close()
        assert _count(dsn, "SELECT count(*) FROM responses") == 100


def test_a_record_the_database_refuses_does_not_block_the_others(pg_db, tmp_path):
    _migrated(pg_db)
    writer = PgStoreWriter(pg_db, "node-a", tmp_path / "spool.db")
    try:
        bad = _response(1)
        bad["retries"] = 2**40  # out of range for the integer column
        for rec in (_response(0), bad, _response(2)):
            writer.submit(rec)
        assert writer.flush()
    finally:
        writer.close()
    assert writer.rejected == 1
    assert _count(pg_db, "SELECT count(*) FROM responses") == 2


def test_store_migrate_cli_and_roles(pg_server, pg_db, tmp_path):
    """`enforcer store migrate` with the password from a file; a writer role with INSERT
    only through the grants; a reader role that may only SELECT."""
    db = pg_db.rsplit("/", 1)[1]
    pg_server.sql("CREATE ROLE w_role LOGIN PASSWORD 'wpass'")
    pg_server.sql("CREATE ROLE r_role LOGIN PASSWORD 'rpass'")
    secret = tmp_path / "pw"
    secret.write_text(pg_server.password + "\n")
    no_pw = f"postgresql://enforcer_admin@127.0.0.1:{pg_server.port}/{db}"
    cmd = [sys.executable, "-m", "enforcer", "store", "migrate", "--store", no_pw,
           "--store-password-file", str(secret), "--retention-days", "3650",
           "--grant-writer", "w_role", "--grant-reader", "r_role"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "applied migrations 1" in done.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "up to date" in again.stdout
    writer_dsn = pg_server.dsn(db, "w_role", "wpass")
    writer = PgStoreWriter(writer_dsn, "node-w", tmp_path / "spool.db")
    try:
        for rec in _records():
            writer.submit(rec)
        assert writer.flush()
    finally:
        writer.close()
    assert writer.spool.count == 0 and writer.written == len(_records())
    import psycopg

    with psycopg.connect(pg_server.dsn(db, "r_role", "rpass")) as conn:
        assert conn.execute("SELECT count(*) FROM detections").fetchone()[0] == 8
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM detections")


def test_prune_drops_whole_days_past_the_retention(pg_db, tmp_path):
    import psycopg

    with psycopg.connect(pg_db, autocommit=True) as conn:
        migrations.migrate(conn, retention_days=3)
    now = time.time_ns()
    # the writer's own prune would race the records: this test calls the function itself
    writer = PgStoreWriter(pg_db, "node-a", tmp_path / "spool.db",
                           prune_interval_s=None)
    try:
        for days_ago in (0, 1, 10, 11):
            rec = _response(days_ago)
            rec["event_time_ns"] = now - days_ago * 86400 * 10**9
            writer.submit(rec)
        assert writer.flush()
    finally:
        writer.close()
    assert _count(pg_db, "SELECT count(*) FROM responses") == 4
    with psycopg.connect(pg_db, autocommit=True) as conn:
        dropped = conn.execute("SELECT enforcer_prune()").fetchone()[0]
    assert dropped == 4  # two days, each a detections and a responses partition
    assert _count(pg_db, "SELECT count(*) FROM responses") == 2


def _response(i: int) -> dict:
    """A responder action record, as the JSONL audit log holds it."""
    return {"kind": "action", "match_id": f"{i:016x}", "outcome": "dry-run",
            "rule": "Terminal shell in container", "priority": "Notice",
            "policy": "contain-shell", "action": "kill", "index": i, "dry_run": True,
            "target": {"pid": 1000 + i}, "retries": 0,
            "start_ns": 1_795_428_060_000_000_000 + i * 1000,
            "event_time_ns": 1_795_428_060_000_000_000 + i * 1000}
