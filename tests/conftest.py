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
    # ... nor over the control socket (STATE_DIR/control.sock): a test that needs it names
    # its own with --control-socket
    env.setdefault("ENFORCER_CONTROL_SOCKET", "off")
    return env
