"""`enforcer ui`: loopback by default, a token anywhere else, no traceback on mistakes."""

from __future__ import annotations

import re
import subprocess
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest


@contextmanager
def running_ui(cmd, env):
    """Start `enforcer ui ...`, yield its base URL (read from its first line), stop it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://(\S+?)/ ", line)
        assert match, f"no address in {line!r}; stderr: {proc.stderr.read()}"
        yield "http://" + match.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


def test_serves_on_loopback(store, enforcer_cmd, cli_env):
    cmd = enforcer_cmd + ["ui", "--store", str(store), "--addr", "127.0.0.1:0", "--quiet"]
    with running_ui(cmd, cli_env) as base:
        with urllib.request.urlopen(base + "/?outcome=failed") as resp:
            assert resp.status == 200
            assert re.findall(r'data-id="(\d+)"', resp.read().decode()) == ["5"]


def test_refuses_other_addresses_without_a_token(store, enforcer_cmd, cli_env):
    env = {k: v for k, v in cli_env.items() if k != "ENFORCER_UI_TOKEN"}
    out = subprocess.run(enforcer_cmd + ["ui", "--store", str(store), "--addr", "0.0.0.0:0"],
                         capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 2
    assert "without a token" in out.stderr and "Traceback" not in out.stderr


def test_other_addresses_with_a_token(store, tmp_path, enforcer_cmd, cli_env):
    token = tmp_path / "token"
    token.write_text("t0ken-for-test\n")
    cmd = enforcer_cmd + ["ui", "--store", str(store), "--addr", "0.0.0.0:0", "--quiet",
                          "--token-file", str(token)]
    with running_ui(cmd, cli_env) as base:
        url = base.replace("0.0.0.0", "127.0.0.1") + "/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url)
        assert refused.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": "Bearer t0ken-for-test"})
        with urllib.request.urlopen(request) as resp:
            assert resp.status == 200


@pytest.mark.parametrize("args, code, message", [
    (["--addr", "nonsense"], 2, "expected HOST:PORT"),
    (["--store", "/nonexistent/audit.db"], 3, "no audit store here"),
])
def test_mistakes_explain_themselves(args, code, message, store, enforcer_cmd, cli_env):
    full = ["ui", "--store", str(store), *args] if "--store" not in args else ["ui", *args]
    out = subprocess.run(enforcer_cmd + full, capture_output=True, text=True, env=cli_env,
                         timeout=30)
    assert out.returncode == code
    assert message in out.stderr and "Traceback" not in out.stderr
