"""The live agent (`--source falco-http`, no eBPF needed) with `--store postgresql://…`:
its records reach PostgreSQL tagged with its --node-name, the password comes from a file,
the backlog is on /metrics, and a database without the schema stops it at start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from enforcer.store.postgres import migrations
from tests.agent_process import AgentProcess
from tests.conftest import REPO

# From the Falco of node-7, the node the agent answers for (another node's alert is refused),
# and from today: a day older than the store's retention is pruned as soon as it is made.
ALERT = json.dumps({**json.loads((REPO / "tests" / "data" / "falco-alerts" /
                                  "terminal_shell_k8s.json").read_bytes()),
                    "hostname": "node-7",
                    "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}).encode()
POLICY = """\
- policy: answer-shells
  match: {rules: [Terminal shell in container], priority: ">=notice"}
  actions:
    - kill: {signal: KILL}
  dry_run: true
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ENFORCER_"))}
    env["PYTHONPATH"] = str(REPO)
    return env


def _argv(work: Path, dsn: str, password_file: Path) -> list[str]:
    (work / "policies").mkdir(exist_ok=True)
    (work / "policies" / "answer.yaml").write_text(POLICY)
    return [sys.executable, "-m", "enforcer", "--source", "falco-http", "--dry-run",
            "--falco-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
            "--policies", str(work / "policies"), "--audit-log", str(work / "audit.jsonl"),
            "--store", dsn, "--store-password-file", str(password_file),
            "--store-spool", str(work / "spool.db"), "--node-name", "node-7"]


def _no_password(pg_server, db: str) -> str:
    return f"postgresql://enforcer_admin@127.0.0.1:{pg_server.port}/{db}"


def test_agent_writes_its_node_records_to_postgresql(pg_server, pg_db, tmp_path):
    import psycopg

    with psycopg.connect(pg_db, autocommit=True) as conn:
        migrations.migrate(conn)
    secret = tmp_path / "password"
    secret.write_text(pg_server.password + "\n")
    db = pg_db.rsplit("/", 1)[1]
    agent = AgentProcess(_argv(tmp_path, _no_password(pg_server, db), secret), _env(),
                         tmp_path, tmp_path / "audit.jsonl", timeout=60)
    try:
        assert pg_server.password not in agent.ready_line  # the start-up line hides it
        request = urllib.request.Request(f"http://127.0.0.1:{agent.falco_port}/", data=ALERT,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
        written = len(agent.wait("the audit records", lambda: [
            r for r in agent.records() if r.get("kind") == "action"]))
        assert written

        def stored() -> int | None:
            with psycopg.connect(pg_db, autocommit=True) as conn:
                n = conn.execute("SELECT count(*) FROM responses WHERE node = 'node-7'"
                                 ).fetchone()[0]
                d = conn.execute("SELECT count(*) FROM detections WHERE node = 'node-7' "
                                 "AND complete").fetchone()[0]
            return n if n == len(agent.records()) and d == 1 else None

        agent.wait("the records in PostgreSQL", stored)
        assert agent.metric("enforcer_store_backlog_records") == 0
        assert agent.metric("enforcer_store_up") == 1
        assert agent.metric("enforcer_store_written_records_total") >= 1
    finally:
        assert agent.stop() == 0, agent.stderr


def test_agent_refuses_a_database_without_the_schema(pg_server, pg_db, tmp_path):
    secret = tmp_path / "password"
    secret.write_text(pg_server.password)
    db = pg_db.rsplit("/", 1)[1]
    done = subprocess.run(_argv(tmp_path, _no_password(pg_server, db), secret), env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert "enforcer store migrate" in done.stderr
    assert pg_server.password not in done.stderr


@pytest.mark.parametrize("content", ["", None])
def test_password_file_mistakes_say_so(content, pg_server, tmp_path):
    secret = tmp_path / "password"
    if content is not None:
        secret.write_text(content)
    done = subprocess.run(_argv(tmp_path, _no_password(pg_server, "x"), secret), env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert str(secret) in done.stderr


def test_doctor_shows_the_spool_backlog(pg_server, pg_db, tmp_path):
    from enforcer.store.postgres.spool import Spool

    spool = Spool(tmp_path / "spool.db")
    spool.append(['{"kind":"match"}'] * 3)
    spool.close()
    done = subprocess.run([sys.executable, "-m", "enforcer", "doctor", "--store", pg_db,
                           "--store-spool", str(tmp_path / "spool.db")], env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert "store spool" in done.stdout and "3 records wait" in done.stdout, done.stdout
    assert "PostgreSQL store" in done.stdout and "enforcer store migrate" in done.stdout


def test_psycopg_is_imported_only_for_a_postgresql_store():
    code = ("import sys, enforcer.cli.main, enforcer.cli.agent_wiring, enforcer.pipeline, "
            "enforcer.console.app, enforcer.store.writer; "
            "sys.exit('psycopg' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr or "psycopg imported without a postgresql store"
