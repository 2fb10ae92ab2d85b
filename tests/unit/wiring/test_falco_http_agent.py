"""`enforcer --source falco-http`: the agent without eBPF answers alerts POSTed by Falco with
the same policies, responder, audit (digest, trace id), outputs, metrics and store; it
refuses to start unauthenticated while a policy would act."""

from __future__ import annotations

import http.client
import os
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_process import AgentProcess
from tests.conftest import REPO

ALERT = (REPO / "tests" / "data" / "falco-alerts" / "terminal_shell_k8s.json").read_bytes()
POLICY = """\
- policy: answer-shells
  match: {rules: [Terminal shell in container], priority: ">=notice"}
  actions:
    - kill: {signal: KILL}
  dry_run: false
"""


def post(port: int, body: bytes, token: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    work = tmp_path_factory.mktemp("falco-http")
    (work / "policies").mkdir()
    (work / "policies" / "answer.yaml").write_text(POLICY)
    audit = work / "audit.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(REPO)
    argv = [sys.executable, "-m", "enforcer", "--source", "falco-http", "--dry-run",
            "--falco-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
            "--policies", str(work / "policies"), "--audit-log", str(audit),
            "--store", str(work / "audit.db"), "--extra-field", "cluster=test",
            "--node-name", "falco-7xk2p"]
    agent = AgentProcess(argv, env, work, audit, timeout=60)
    yield agent
    assert agent.stop() == 0, agent.stderr
    assert "falco-http requests:" in agent.stderr


def test_a_posted_falco_alert_is_answered_in_dry_run(intake: AgentProcess) -> None:
    assert intake.falco_port is not None
    assert "auth: none, dry-run only" in intake.ready_line
    assert post(intake.falco_port, ALERT) == 200

    def answered() -> list[dict[str, Any]] | None:
        recs = [r for r in intake.records() if r.get("rule") == "Terminal shell in container"]
        return recs if any(r["kind"] == "action" for r in recs) else None

    recs = intake.wait("the audit records", answered)
    decision = next(r for r in recs if r["kind"] == "decision")
    assert decision["policy"] == "answer-shells" and decision["dry_run"] is True
    assert {r["policy_digest"] for r in recs} == {intake.digest}
    (trace_id,) = {r["trace_id"] for r in recs}
    action = next(r for r in recs if r["kind"] == "action")
    # Falco's alert has no proc.pid: the kill is skipped and says why, never guessed.
    assert action["action"] == "kill" and action["outcome"] == "skipped"

    alert = intake.wait("the alert on stdout", lambda: [
        a for a in intake.alerts() if a.get("trace_id") == trace_id])[0]
    assert alert["output_fields"]["k8s.pod.name"] == "web-55696bc998-9j9zk"
    assert alert["output_fields"]["cluster"] == "test"
    assert intake.metric("enforcer_falco_http_requests_total", code="200") == 1
    assert intake.metric("enforcer_actions_total", action="kill", outcome="skipped",
                         dry_run="true") == 1
    assert intake.get("/readyz")[0] == 200

    def stored() -> Any:
        with sqlite3.connect(intake.workdir / "audit.db") as conn:
            return conn.execute("SELECT rule, pod FROM detections WHERE trace_id = ?",
                                (trace_id,)).fetchone()

    assert intake.wait("the store row", stored) == ("Terminal shell in container",
                                                    "web-55696bc998-9j9zk")


def test_bad_bodies_are_refused_and_counted(intake: AgentProcess) -> None:
    assert intake.falco_port is not None
    assert post(intake.falco_port, b"{not json") == 400
    # An oversized body is refused on its Content-Length, before it is read.
    conn = http.client.HTTPConnection("127.0.0.1", intake.falco_port, timeout=10)
    conn.putrequest("POST", "/")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(2 << 20))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    assert intake.metric("enforcer_falco_http_requests_total", code="400") == 1
    assert intake.proc.poll() is None


def test_an_unauthenticated_intake_that_would_act_does_not_start(tmp_path: Path,
                                                                 enforcer_cmd: list[str],
                                                                 cli_env: dict[str, str]
                                                                 ) -> None:
    policy = tmp_path / "answer.yaml"
    policy.write_text(POLICY)
    res = subprocess.run([*enforcer_cmd, "--source", "falco-http", "--falco-http-addr",
                          "127.0.0.1:0", "--policies", str(policy), "--audit-log",
                          str(tmp_path / "audit.jsonl")],
                         capture_output=True, text=True, env=cli_env, timeout=60, check=False)
    assert res.returncode == 2, res.stderr
    assert "refusing to start --source falco-http without authentication" in res.stderr
    assert "Traceback" not in res.stderr


def test_with_a_token_the_intake_acts_and_refuses_strangers(tmp_path: Path,
                                                           enforcer_cmd: list[str],
                                                           cli_env: dict[str, str]) -> None:
    (tmp_path / "answer.yaml").write_text(POLICY)
    (tmp_path / "token").write_text("s3cret\n")
    audit = tmp_path / "audit.jsonl"
    env = {k: v for k, v in cli_env.items() if not k.startswith("OTEL_")}
    agent = AgentProcess([*enforcer_cmd, "--source", "falco-http", "--falco-http-addr",
                          "127.0.0.1:0", "--falco-http-token-file", str(tmp_path / "token"),
                          "--node-name", "falco-7xk2p",
                          "--policies", str(tmp_path / "answer.yaml"), "--audit-log",
                          str(audit)], env, tmp_path, audit, timeout=60)
    try:
        assert "auth: bearer token" in agent.ready_line and "1 acting" in agent.ready_line
        assert agent.falco_port is not None
        assert post(agent.falco_port, ALERT) == 401
        assert post(agent.falco_port, ALERT, token="wrong") == 401
        assert agent.records() == []  # refused posts trigger nothing
        assert post(agent.falco_port, ALERT, token="s3cret") == 200
        recs = agent.wait("the decision", lambda: [
            r for r in agent.records() if r["kind"] == "decision"])
        assert len(recs) == 1
        assert recs[0]["dry_run"] is False  # acting: authenticated intake, acting policy
        assert agent.metric("enforcer_falco_http_requests_total", code="401") == 2
    finally:
        assert agent.stop() == 0, agent.stderr
