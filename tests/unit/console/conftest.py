"""A console app over a store seeded from tests/data/audit/ (alerts + responder records)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from enforcer.console.app import ConsoleApp
from enforcer.store.importer import import_files
from enforcer.store.schema import connect

DATA = Path(__file__).resolve().parents[2] / "data" / "audit"
# Alerts first, so that detection ids follow the alerts: 1 to 8, oldest first.
SEED = [DATA / "alerts.jsonl", DATA / "audit.jsonl"]


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "audit.db"
    conn = connect(path)
    import_files(conn, SEED)
    conn.close()
    return path


class Response:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes):
        self.status = int(status.split()[0])
        self.headers = dict(headers)
        self.set_cookies = [v for k, v in headers if k == "Set-Cookie"]
        self.text = body.decode()


def call(app, path="/", method="GET", headers=None, script_name=""):
    """One request straight through the WSGI interface."""
    path, _, qs = path.partition("?")
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": qs,
               "SCRIPT_NAME": script_name, "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
               "wsgi.input": io.BytesIO(b""), "wsgi.url_scheme": "http"}
    for key, value in (headers or {}).items():
        environ["HTTP_" + key.upper().replace("-", "_")] = value
    got = {}

    def start_response(status, hdrs):
        got["status"], got["headers"] = status, hdrs

    body = b"".join(app(environ, start_response))
    return Response(got["status"], got["headers"], body)


@pytest.fixture
def wsgi_call():
    """call(app, path, method, headers, script_name) -> Response, straight through WSGI."""
    return call


@pytest.fixture
def app(store):
    return ConsoleApp(store)
