"""The test PostgreSQL server (tests/pg_server.py) is a real, private one: password auth on
its own TCP port, a database per test, and nothing left behind."""

from __future__ import annotations

import pytest


def test_server_takes_passwords_on_its_own_port(pg_server, pg_db):
    import psycopg

    with psycopg.connect(pg_db) as conn:
        assert conn.execute("SHOW port").fetchone()[0] == str(pg_server.port)
        assert conn.execute("SELECT current_setting('listen_addresses')").fetchone()[0] == \
            "127.0.0.1"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_server.dsn(password="wrong"), connect_timeout=5).close()


def test_stopped_server_refuses_then_comes_back(pg_bindir):
    import psycopg

    from tests.pg_server import running_server

    with running_server(pg_bindir) as server:
        data = server.dir
        server.stop()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(server.dsn(), connect_timeout=2).close()
        server.start()
        psycopg.connect(server.dsn(), connect_timeout=5).close()
    assert not data.exists()
