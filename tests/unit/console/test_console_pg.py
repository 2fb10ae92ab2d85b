"""The console over the PostgreSQL store: every node's detections in one list, a node
filter, a per-node "would have done" view; read through a role that may only SELECT.

Two agents' writers (node-a, node-b) store the same seed records (tests/data/audit/), so
every filter of the single-node console finds each detection twice, once per node."""

from __future__ import annotations

import re

import pytest

from enforcer.console.app import ConsoleApp
from enforcer.store.postgres import migrations
from enforcer.store.postgres.writer import PgStoreWriter
from tests.unit.console.conftest import SEED

NODES = ("node-a", "node-b")


@pytest.fixture(scope="module")
def reader_dsn(pg_server, tmp_path_factory):
    """A migrated database seeded by two nodes; the DSN of a SELECT-only role."""
    import psycopg

    db = pg_server.new_database()
    role = f"reader_{db}"
    pg_server.sql(f"CREATE ROLE {role} LOGIN PASSWORD 'readpw'")
    with psycopg.connect(pg_server.dsn(db), autocommit=True) as conn:
        migrations.migrate(conn, retention_days=0, reader_role=role)
    records = [__import__("json").loads(line) for path in SEED
               for line in path.read_text().splitlines() if line.strip()]
    for node in NODES:
        spool = tmp_path_factory.mktemp("spool") / "spool.db"
        writer = PgStoreWriter(pg_server.dsn(db), node, spool)
        for rec in records:
            writer.submit(rec)
        assert writer.flush()
        writer.close()
        assert writer.written == len(records)
    return pg_server.dsn(db, role, "readpw")


@pytest.fixture
def app(reader_dsn):
    return ConsoleApp(reader_dsn)


def rows(html: str) -> list[str]:
    return re.findall(r'<tr class="detection" data-id="(\d+)">', html)


def nodes(html: str) -> list[str]:
    return re.findall(r'<span class="node">([^<]*)</span>', html)


def test_one_list_for_every_node(app, wsgi_call):
    page = wsgi_call(app, "/")
    assert page.status == 200, page.text
    assert len(rows(page.text)) == 16
    assert sorted(set(nodes(page.text))) == list(NODES)
    # The filter form offers every node.
    assert all(f'<option value="{n}"' in page.text for n in NODES)
    for node in NODES:
        only = wsgi_call(app, f"/?node={node}").text
        assert len(rows(only)) == 8 and set(nodes(only)) == {node}


@pytest.mark.parametrize("query, expected", [
    ("rule=Read+sensitive+file+untrusted", 2),
    ("outcome=failed", 1),
    ("outcome=dry-run", 2),
    ("priority=critical", 1),
    ("namespace=dev", 2),
    ("container=c0ffee333333", 1),  # container.name, else container.id
    ("policy=contain-shell&outcome=guard", 1),
    ("q=shadow", 2),
    ("since=2026-11-23T10:03&until=2026-11-23T10:05", 2),
])
def test_filters_match_the_single_node_console(app, query, expected, wsgi_call):
    both = wsgi_call(app, "/?" + query)
    assert both.status == 200, both.text
    assert len(rows(both.text)) == 2 * expected
    assert len(rows(wsgi_call(app, f"/?{query}&node=node-b").text)) == expected


def test_detail_of_one_nodes_detection(app, wsgi_call):
    oldest = rows(wsgi_call(app, "/?node=node-a").text)[-1]
    page = wsgi_call(app, f"/detection/{oldest}")
    assert page.status == 200, page.text
    assert f"{0xa1:032x}" in page.text
    assert re.findall(r'<tr class="action" data-action="(\w+)">', page.text) == \
        ["snapshot", "kill"]
    assert "&#34;syscall&#34;: &#34;pidfd_send_signal&#34;" in page.text
    assert wsgi_call(app, "/detection/12345").status == 404


def test_would_have_done_per_node(app, wsgi_call):
    dry = wsgi_call(app, "/dry-run")
    assert dry.status == 200, dry.text
    assert re.findall(r'data-policy="([\w-]+)"', dry.text) == ["isolate-dropper",
                                                                "kill-readers"]
    assert sorted(set(re.findall(r'data-node="([\w-]+)"', dry.text))) == list(NODES)
    one = wsgi_call(app, "/dry-run?node=node-a").text
    assert set(re.findall(r'data-node="([\w-]+)"', one)) == {"node-a"}
    assert "/apis/networking.k8s.io/v1/namespaces/prod/networkpolicies" in one


def test_stats_pages(app, wsgi_call):
    for by in ("rule", "priority", "outcome"):
        stats = wsgi_call(app, f"/stats?by={by}")
        assert stats.status == 200 and "<svg" in stats.text and "<rect" in stats.text


def test_pages_through_many_detections(pg_server, wsgi_call, tmp_path):
    import psycopg

    db = pg_server.new_database()
    with psycopg.connect(pg_server.dsn(db), autocommit=True) as conn:
        migrations.migrate(conn, retention_days=0)
    writer = PgStoreWriter(pg_server.dsn(db), "node-p", tmp_path / "spool.db")
    base = 1_795_428_060_000_000_000
    for i in range(120):
        writer.submit({"kind": "alert", "rule": "R", "priority": "Notice",
                       "output": f"event {i}", "output_fields": {}, "time_ns": base + i})
        if i % 2 == 0:  # a dry-run kill for every other one: 60 to page through
            for kind in ("decision", "action"):
                writer.submit({"kind": kind, "match_id": f"m{i}", "rule": "R",
                               "event_time_ns": base + i, "start_ns": base + i + 5,
                               "policy": "p", "action": "kill" if kind == "action" else None,
                               "dry_run": True, "outcome": "dry-run"})
    assert writer.flush()
    writer.close()
    app = ConsoleApp(pg_server.dsn(db))

    def walk(path: str) -> list[str]:
        seen: list[str] = []
        while path:
            page = wsgi_call(app, path).text
            seen += rows(page)
            more = re.search(r'href="/(\?[^"]*)" id="older"', page)
            path = "/" + more.group(1).replace("&amp;", "&") if more else ""
        return seen

    every = walk("/?node=node-p")
    assert len(every) == 120 and len(set(every)) == 120
    # A response filter walks the responses (two match per detection here), page by page.
    dry = walk("/?outcome=dry-run&node=node-p")
    assert len(dry) == 60 and len(set(dry)) == 60
    assert dry == [d for d in every if d in set(dry)]  # newest first, as the full list


def test_database_down_is_503_with_advice(pg_server, wsgi_call):
    app = ConsoleApp(f"postgresql://nobody:x@127.0.0.1:{pg_server.port + 1}/none")
    page = wsgi_call(app, "/")
    assert page.status == 503
    assert "x@" not in page.text and "check that the database is up" in page.text


def test_enforcer_ui_serves_postgresql_with_a_read_only_role(reader_dsn, enforcer_cmd,
                                                             cli_env, tmp_path):
    import urllib.request

    from tests.unit.console.test_console_cli import running_ui

    head, _, rest = reader_dsn.partition("://")
    user, _, after = rest.partition(":")
    password, _, where = after.partition("@")
    secret = tmp_path / "pw"
    secret.write_text(password)
    cmd = enforcer_cmd + ["ui", "--store", f"{head}://{user}@{where}", "--store-password-file",
                          str(secret), "--addr", "127.0.0.1:0", "--quiet"]
    with running_ui(cmd, cli_env) as base:
        with urllib.request.urlopen(base + "/?node=node-b&outcome=failed") as resp:
            assert resp.status == 200
            assert len(rows(resp.read().decode())) == 1


def test_enforcer_ui_says_what_to_do_without_the_schema(pg_db, enforcer_cmd, cli_env):
    import subprocess

    done = subprocess.run(enforcer_cmd + ["ui", "--store", pg_db, "--addr", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=60, env=cli_env)
    assert done.returncode == 3
    assert "enforcer store migrate" in done.stderr and "enforcer_admin:***@" in done.stderr
