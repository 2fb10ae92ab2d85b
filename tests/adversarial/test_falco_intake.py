"""Threats on the falco-http intake: a stranger on the network (or a Falco of another node,
through a shared Falcosidekick) posts alerts to make this agent act on what is not its node,
floods it with alerts under made-up rule names to grow its memory without bound, or uses an
unauthenticated dry-run intake to make the agent call out (notify webhooks, Kubernetes
Events) with text of its choosing."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.adversarial.conftest import rss_kib, start_agent
from tests.agent_process import AgentProcess
from tests.conftest import REPO
from tests.receivers import webhook_recorder

ALERT = json.loads((REPO / "tests" / "data" / "falco-alerts" / "terminal_shell_k8s.json")
                   .read_text())
NODE = "node-a"
POSTS = 10_000
# What 8 000 more alerts under new rule names may add to the agent's resident memory once the
# first 2 000 have warmed it up: flat, up to allocator noise.
RSS_GROWTH_BOUND_KIB = 6 * 1024


def _alert(**changes: Any) -> bytes:
    return json.dumps({**ALERT, "hostname": NODE, **changes}).encode()


def _post(conn: http.client.HTTPConnection, body: bytes,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    conn.request("POST", "/", body=body, headers={"Content-Type": "application/json",
                                                  **(headers or {})})
    response = conn.getresponse()
    return response.status, json.loads(response.read() or b"{}")


def _rule_labels(agent: AgentProcess) -> set[str]:
    _, text = agent.get("/metrics")
    return {sample.labels["rule"] for family in text_string_to_metric_families(text)
            if family.name == "enforcer_rule_matches" for sample in family.samples}


def test_an_alert_for_another_node_is_refused(tmp_path: Path) -> None:
    agent = start_agent(tmp_path, "--node-name", NODE)
    try:
        assert agent.falco_port is not None
        conn = http.client.HTTPConnection("127.0.0.1", agent.falco_port, timeout=10)
        code, doc = _post(conn, _alert(hostname="node-b"))
        assert code == 403 and "node-b" in doc["message"]
        assert _post(conn, _alert(hostname=""))[0] == 403
        assert _post(conn, _alert())[0] == 200
        conn.close()
        decisions = agent.wait("the decision", lambda: [
            r for r in agent.records() if r["kind"] == "decision"])
        assert len(decisions) == 1  # only the alert for this node was answered
        assert agent.metric("enforcer_falco_http_requests_total", code="403") == 2
    finally:
        assert agent.stop() == 0, agent.stderr


def test_unique_rule_names_keep_memory_and_labels_flat(tmp_path: Path) -> None:
    agent = start_agent(tmp_path, "--node-name", NODE, "--falco-http-client-rate", "0")
    try:
        assert agent.falco_port is not None
        conn = http.client.HTTPConnection("127.0.0.1", agent.falco_port, timeout=30)
        before = None
        for i in range(POSTS):
            if i == POSTS // 5:
                before = rss_kib(agent.proc.pid)
            assert _post(conn, _alert(rule=f"made up rule {i}"))[0] == 200
        assert _post(conn, _alert())[0] == 200  # a rule the agent knows
        conn.close()
        assert before is not None
        grown = rss_kib(agent.proc.pid) - before
        print(f"agent RSS {before} KiB after {POSTS // 5} alerts, +{grown} KiB after "
              f"{POSTS}")
        labels = agent.wait("the known rule's count", lambda: (
            lambda found: found if "Terminal shell in container" in found else None)(
                _rule_labels(agent)))
        assert labels == {"Terminal shell in container", "(other)"}
        assert grown < RSS_GROWTH_BOUND_KIB, f"RSS grew by {grown} KiB"
    finally:
        assert agent.stop() == 0, agent.stderr
    summary = agent.stderr.split("Triggered rules by rule name:", 1)[1]
    assert "made up rule" not in summary and "(other): 10000" in summary


NOTIFYING = """\
- policy: tell-and-kill
  match: {rules: [Terminal shell in container]}
  actions:
    - notify: {url: "http://127.0.0.1:PORT/hook"}
    - kill: {signal: KILL}
  dry_run: DRY
"""


def _notify_agent(work: Path, port: int, *extra: str, dry: bool) -> AgentProcess:
    work.mkdir()
    policy = NOTIFYING.replace("PORT", str(port)).replace("DRY", str(dry).lower())
    return start_agent(work, "--node-name", NODE, "--kubernetes-events", "true", *extra,
                       policy=policy)


def test_unauthenticated_dry_run_sends_no_notify_and_no_event(tmp_path: Path) -> None:
    with webhook_recorder() as hook:
        # Unauthenticated: the agent starts only because everything is dry-run.
        agent = _notify_agent(tmp_path / "open", hook.port, dry=True)
        try:
            assert "auth: none" in agent.ready_line
            conn = http.client.HTTPConnection("127.0.0.1", agent.falco_port or 0, timeout=10)
            assert _post(conn, _alert())[0] == 200
            conn.close()
            actions = agent.wait("both actions' records", lambda: (
                lambda recs: recs if len(recs) == 2 else None)(
                    [r for r in agent.records() if r["kind"] == "action"]))
            notify = next(r for r in actions if r["action"] == "notify")
            assert notify["outcome"] == "skipped" and "received" in notify["reason"]
        finally:
            assert agent.stop() == 0, agent.stderr
        assert hook.bodies == []
        assert not [r for r in agent.records() if r["kind"] == "k8s_event"]

        # The control: authenticated and live, the same alert does notify.
        (tmp_path / "token").write_text("s3cret\n")
        agent = _notify_agent(tmp_path / "closed", hook.port, "--falco-http-token-file",
                              str(tmp_path / "token"), dry=False)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", agent.falco_port or 0, timeout=10)
            assert _post(conn, _alert(), {"Authorization": "Bearer s3cret"})[0] == 200
            conn.close()
            agent.wait("the notify", lambda: hook.bodies)
        finally:
            assert agent.stop() == 0, agent.stderr
        assert json.loads(hook.bodies[0])["dry_run"] is False
