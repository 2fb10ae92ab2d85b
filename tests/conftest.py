"""Shared test fixtures. Under CI=true a missing prerequisite fails the test; elsewhere it
skips with a message saying what is missing and how to get it."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UPSTREAM_RULES = REPO / "tests" / "data" / "falco-rules"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The settings that say where an agent writes. Unset, an agent writes /var/log/enforcer,
# /var/lib/enforcer and /run/enforcer, which belong to a real agent on the machine. (Not
# ENFORCER_STORE: setting it switches the store on; off is the default, and a test that
# wants one names its file.)
AGENT_PATHS = {"ENFORCER_AUDIT_LOG": "audit.jsonl", "ENFORCER_STATE_DIR": "state",
               "ENFORCER_SNAPSHOT_DIR": "snapshots"}
# Where they point for the whole session (a temp dir removed at the end); an agent that a
# test starts gets its own instead (agent_paths, tests/agent_process.py).
SESSION_AGENT_PATHS: dict[str, str] = {}
_SESSION_DIR: list[Path] = []


def run_labels() -> list[str]:
    """`podman run` options that label a container with the suite run's mark, by which
    scripts/leftovers.py finds the containers a run left behind."""
    mark = os.environ.get("SUITE_RUN_MARK")
    return ["--label", f"enforcer.test.run={mark}"] if mark else []


def agent_paths(root: Path) -> dict[str, str]:
    """AGENT_PATHS under `root`: the audit log, store, state and snapshot directories of
    one agent."""
    return {name: str(root / leaf) for name, leaf in AGENT_PATHS.items()}


def pytest_configure(config: pytest.Config) -> None:
    """A clean environment for the whole run: no ENFORCER_* or OTEL_* setting of the
    machine's own agent reaches the code under test, and an agent started without explicit
    paths writes into a temp dir of this run, never into /var or /run."""
    if _SESSION_DIR:
        return
    for name in [n for n in os.environ if n.startswith(("ENFORCER_", "OTEL_"))]:
        del os.environ[name]
    root = Path(tempfile.mkdtemp(prefix="enforcer-test-agent-"))
    _SESSION_DIR.append(root)
    SESSION_AGENT_PATHS.update(agent_paths(root))
    os.environ.update(SESSION_AGENT_PATHS)


def pytest_unconfigure(config: pytest.Config) -> None:
    while _SESSION_DIR:
        shutil.rmtree(_SESSION_DIR.pop(), ignore_errors=True)


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
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment for a CLI or agent child process: this run's clean environment, and
    an audit log, store, state and snapshot directory of the test's own."""
    env = dict(os.environ) | agent_paths(tmp_path_factory.mktemp("agent-paths"))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # A live agent serves /metrics on 0.0.0.0:9376 by default: tests must not fight over it.
    env.setdefault("ENFORCER_HTTP_ADDR", "127.0.0.1:0")
    # ... nor over the control socket (STATE_DIR/control.sock): a test that needs it names
    # its own with --control-socket
    env.setdefault("ENFORCER_CONTROL_SOCKET", "off")
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
