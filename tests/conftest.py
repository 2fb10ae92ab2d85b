"""Shared test fixtures. Under CI=true a missing prerequisite fails the test; elsewhere it
skips with a message saying what is missing and how to get it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UPSTREAM_RULES = REPO / "tests" / "data" / "falco-rules"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, missing: str, how: str) -> None:
    """Skip (or, under CI=true, fail) when a prerequisite is missing."""
    if condition:
        return
    message = f"{missing}; to get it: {how}"
    if IN_CI:
        pytest.fail(f"prerequisite missing under CI=true: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def need_root() -> None:
    require(os.geteuid() == 0, "not running as root",
            "run the tests with sudo bash scripts/test.sh")


@pytest.fixture
def enforcer_cmd() -> list[str]:
    """argv prefix that runs this checkout's CLI with the test interpreter."""
    return [sys.executable, "-m", "enforcer"]


@pytest.fixture
def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # A live agent serves /metrics on 0.0.0.0:9376 by default: tests must not fight over it.
    env.setdefault("ENFORCER_HTTP_ADDR", "127.0.0.1:0")
    return env


@pytest.fixture(scope="session")
def pg_bindir():
    """Debian's PostgreSQL server programs (and psycopg to talk to them), or skip/fail."""
    from tests.pg_server import bin_dir  # noqa: PLC0415

    bindir = bin_dir()
    require(bindir is not None, "PostgreSQL server not installed",
            "apt-get install postgresql (scripts/setup.sh does)")
    try:
        import psycopg  # noqa: F401, PLC0415
    except ImportError:
        require(False, "psycopg not installed", "pip install -e '.[test]' (scripts/setup.sh)")
    return bindir


@pytest.fixture(scope="session")
def pg_server(pg_bindir):
    """A private PostgreSQL server for the session (Debian's postgresql, initdb in /tmp,
    its own port on 127.0.0.1), removed at the end. Tests take a database each: `pg_db`.
    A test that stops its server starts its own with tests.pg_server.running_server."""
    from tests.pg_server import running_server  # noqa: PLC0415

    with running_server(pg_bindir) as server:
        yield server


@pytest.fixture
def pg_db(pg_server) -> str:
    """A fresh database on the session's server; its superuser DSN."""
    return pg_server.dsn(pg_server.new_database())
