"""The live agent with everything wired, end to end, as root: real eBPF detection of a
/etc/shadow read, a dry-run policy from a ConfigMap-style directory, traces to a real
OTLP/HTTP receiver, a webhook receiver, /metrics and /readyz on a loopback port, the SQLite
store, and hot reload of the policy directory. One agent for the whole module."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_process import AgentProcess
from tests.conftest import REPO
from tests.receivers import otlp_collector, webhook_recorder
from tests.system.conftest import require_ebpf
from tests.unit.reload.configmap import ConfigMapDir

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

RULE = "Read sensitive file untrusted"
POLICY_V1 = f"""\
- policy: review-shadow-readers
  match: {{rules: [{RULE}]}}
  actions:
    - snapshot: {{paths: [/tmp], max_bytes: 1Mi}}
    - kill: {{signal: KILL}}
  dry_run: true
"""
POLICY_V2 = f"""\
- policy: shadow-readers-v2
  match: {{rules: [{RULE}]}}
  actions:
    - kill: {{signal: TERM}}
  dry_run: true
"""
BROKEN = """\
- policy: broken
  match: {rules: [Read sensitive file untrusted]}
  actions:
    - kill: {signal: KILL, bogus_parameter: 1}
"""


MKDIR_RULE = """
- rule: Marker directory made
  desc: a rule on mkdir, which none of the bundled rules watches
  condition: >
    evt.type in (mkdir, mkdirat) and proc.name = mkdir
    and proc.cmdline contains enforcer-reattach-
  output: marker directory made (command=%proc.cmdline)
  priority: WARNING
"""
BUNDLED_RULES = (REPO / "policies" / "rules" / "falco_rules.yaml").read_text()


class Wired:
    def __init__(self, agent: AgentProcess, otlp: Any, webhook: Any, policies: ConfigMapDir,
                 store: Path, rules: ConfigMapDir):
        self.program_out = agent.workdir / "program.jsonl"
        self.rules = rules
        self.agent = agent
        self.otlp = otlp
        self.webhook = webhook
        self.policies = policies
        self.store = store


@pytest.fixture(scope="module")
def wired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wired]:
    require_ebpf()
    work = tmp_path_factory.mktemp("wired")
    policies = ConfigMapDir(work / "policies")
    policies.write({"review.yaml": POLICY_V1})
    rules = ConfigMapDir(work / "rules")
    rules.write({"falco_rules.yaml": BUNDLED_RULES})
    audit, store = work / "audit.jsonl", work / "audit.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(REPO)
    with otlp_collector() as otlp, webhook_recorder() as webhook:
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint, OTEL_BSP_SCHEDULE_DELAY="100",
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
        argv = [sys.executable, "-m", "enforcer", "--dry-run",
                "--rules", str(rules.path), "--policies", str(policies.path),
                "--audit-log", str(audit),
                "--store", str(store), "--http-addr", "127.0.0.1:0", "--ui",
                "--webhook", webhook.url, "--webhook-header", "Authorization: Bearer wh-token",
                "--extra-field", "environment=system-test", "--node-name", "node-test",
                "--program-output", json.dumps(["tee", "-a", str(work / "program.jsonl")]),
                "--reload-interval", "0.3"]
        agent = AgentProcess(argv, env, work, audit)
        try:
            yield Wired(agent, otlp, webhook, policies, store, rules)
        finally:
            code = agent.stop()
            print(agent.stderr[-2000:])
            assert code == 0, agent.stderr


def read_shadow(wired: Wired) -> dict[str, Any]:
    """`sh -c 'cat /etc/shadow MARKER'` (the marker makes this test's read its own); the
    alert the agent printed for it."""
    marker = f"/tmp/enforcer-wired-{uuid.uuid4().hex[:10]}"
    subprocess.run(["sh", "-c", f"cat /etc/shadow {marker} >/dev/null 2>&1; true"], check=False)

    def find() -> dict[str, Any] | None:
        for alert in wired.agent.alerts():
            if alert["rule"] == RULE and marker in (alert["output_fields"].get("proc.cmdline")
                                                    or ""):
                return alert
        return None

    return wired.agent.wait(f"the alert for {marker}", find)


def records_of(wired: Wired, trace_id: str, want_actions: int) -> list[dict[str, Any]]:
    def find() -> list[dict[str, Any]] | None:
        recs = [r for r in wired.agent.records() if r.get("trace_id") == trace_id]
        done = sum(r["kind"] == "action" for r in recs) >= want_actions
        return recs if done else None

    return wired.agent.wait(f"audit records of trace {trace_id}", find)


def test_a_detection_is_alerted_traced_audited_counted_stored_and_posted(wired: Wired) -> None:
    agent = wired.agent
    status, body = agent.get("/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    assert agent.get("/healthz")[0] == 200
    matches_before = agent.metric("enforcer_rule_matches_total", rule=RULE)

    alert = read_shadow(wired)
    trace_id = alert["trace_id"]
    assert len(trace_id) == 32
    assert alert["output_fields"]["environment"] == "system-test"  # --extra-field
    assert alert["output_fields"]["fd.name"] == "/etc/shadow"

    # The durable audit record: same trace id, the active policy digest, dry-run actions.
    recs = records_of(wired, trace_id, want_actions=2)
    kinds = [r["kind"] for r in recs]
    assert kinds[:2] == ["match", "decision"] and kinds.count("action") == 2
    assert {r["policy_digest"] for r in recs} == {agent.digest}
    actions = [r for r in recs if r["kind"] == "action"]
    assert [a["action"] for a in actions] == ["snapshot", "kill"]
    assert all(a["dry_run"] is True for a in actions)

    # One trace: match -> decision -> two actions, with the digest on the root.
    spans = wired.otlp.wait_for(lambda ss: sum(s.trace_id == trace_id for s in ss) >= 4)
    mine = {s.name: s for s in spans if s.trace_id == trace_id}
    root, decision = mine["enforcer.match"], mine["enforcer.decision"]
    assert root.parent_span_id == ""
    assert root.attributes["enforcer.rule"] == RULE
    assert root.attributes["enforcer.policy_digest"] == agent.digest
    assert root.resource["service.name"] == "enforcer"
    assert decision.parent_span_id == root.span_id
    assert decision.attributes["enforcer.policy"] == "review-shadow-readers"
    action_spans = [s for s in spans if s.trace_id == trace_id and s.name == "enforcer.action"]
    assert sorted(s.attributes["enforcer.action"] for s in action_spans) == ["kill", "snapshot"]
    assert all(s.parent_span_id == decision.span_id for s in action_spans)
    assert all(s.attributes["enforcer.dry_run"] is True for s in action_spans)

    # /metrics counts the match and the dry-run actions.
    assert agent.metric("enforcer_rule_matches_total", rule=RULE) >= matches_before + 1
    assert agent.metric("enforcer_actions_total", action="kill", dry_run="true") >= 1
    assert agent.metric("enforcer_events_total", type="openat") > 0

    # The webhook got Falco's JSON, with the auth header.
    def posted() -> dict[str, Any] | None:
        for raw, headers in zip(wired.webhook.bodies, wired.webhook.headers, strict=False):
            doc = json.loads(raw)
            if doc.get("trace_id") == trace_id:
                assert headers["Authorization"] == "Bearer wh-token"
                return doc
        return None

    doc = agent.wait("the webhook delivery", posted)
    assert {"output", "priority", "rule", "time", "output_fields", "source", "tags",
            "hostname"} <= set(doc)
    assert doc["rule"] == RULE and doc["priority"] == "Warning"

    # The program output got the same JSON on its stdin (argv list, no shell).
    def piped() -> list[dict[str, Any]]:
        if not wired.program_out.exists():
            return []
        return [d for d in map(json.loads, wired.program_out.read_text().splitlines())
                if d.get("trace_id") == trace_id]

    assert agent.wait("the program output", piped)[0]["rule"] == RULE

    # The store has the detection and its responses, joined on the trace id.
    def stored() -> tuple[Any, ...] | None:
        with sqlite3.connect(wired.store) as conn:
            row = conn.execute("SELECT id, rule FROM detections WHERE trace_id = ?",
                               (trace_id,)).fetchone()
            if row is None:
                return None
            n = conn.execute("SELECT count(*) FROM responses WHERE det_id = ?",
                             (row[0],)).fetchone()[0]
            return (row[1], n) if n >= 2 else None

    rule, responses = agent.wait("the store rows", stored)
    assert rule == RULE and responses >= 2

    # The console, mounted under /ui of the same server (loopback: no token needed).
    status, page = agent.get("/ui/")
    assert status == 200 and RULE in page


def test_hot_reload_swaps_the_policy_and_keeps_it_on_a_broken_update(wired: Wired) -> None:
    agent = wired.agent
    old_digest = agent.digest
    wired.policies.write({"review.yaml": POLICY_V2})
    agent.wait("the reload", lambda: "reloaded rules and policies" in agent.stderr)
    applied = agent.wait("the reload audit record", lambda: [
        r for r in agent.records() if r["kind"] == "reload" and r["outcome"] == "applied"])
    new_digest = applied[-1]["policy_digest"]
    assert new_digest != old_digest
    assert agent.metric("enforcer_policy_reloads_total", result="success") == 1

    alert = read_shadow(wired)
    recs = records_of(wired, alert["trace_id"], want_actions=1)
    decision = next(r for r in recs if r["kind"] == "decision")
    assert decision["policy"] == "shadow-readers-v2"
    assert {r["policy_digest"] for r in recs} == {new_digest}
    action = next(r for r in recs if r["kind"] == "action")
    assert (action["policy"], action["action"]) == ("shadow-readers-v2", "kill")

    # A broken update: refused, reported (stderr, audit with FILE:LINE, metric, alert), and
    # the last good set keeps deciding.
    failures_before = agent.metric("enforcer_policy_reloads_total", result="failure")
    wired.policies.write({"review.yaml": BROKEN})
    failed = agent.wait("the refusal", lambda: [
        r for r in agent.records() if r["kind"] == "reload" and r["outcome"] == "failed"])
    assert failed[-1]["policy_digest"] == new_digest
    assert failed[-1]["detail"]["file"].endswith("review.yaml")
    assert failed[-1]["detail"]["line"] >= 1
    assert "update refused" in agent.stderr
    assert agent.metric("enforcer_policy_reloads_total",
                        result="failure") == failures_before + 1
    agent.wait("the critical alert", lambda: [
        a for a in agent.alerts() if a["rule"] == "Enforcer policy reload failed"])

    alert = read_shadow(wired)
    recs = records_of(wired, alert["trace_id"], want_actions=1)
    assert next(r for r in recs if r["kind"] == "decision")["policy"] == "shadow-readers-v2"
    assert {r["policy_digest"] for r in recs} == {new_digest}


def test_reloaded_rules_on_new_syscalls_get_their_probes_without_restart(wired: Wired) -> None:
    agent = wired.agent
    assert "mkdir" not in agent.ready_line
    marker = f"/tmp/enforcer-reattach-{uuid.uuid4().hex[:8]}"
    subprocess.run(["mkdir", marker], check=True)  # not watched yet: no alert
    wired.policies.write({"review.yaml": POLICY_V2})  # repair the set the last test broke
    wired.rules.write({"falco_rules.yaml": BUNDLED_RULES + MKDIR_RULE})
    agent.wait("the re-attachment", lambda: "re-attached the probes" in agent.stderr,
               timeout=120)
    assert "restart the agent" not in agent.stderr
    status, body = agent.get("/readyz")
    assert status == 200 and "attachment" not in json.loads(body)["warnings"]
    second = f"/tmp/enforcer-reattach-{uuid.uuid4().hex[:8]}"
    subprocess.run(["mkdir", second], check=True)
    alerts = agent.wait("the mkdir alert", lambda: [
        a for a in agent.alerts() if a["rule"] == "Marker directory made"])
    assert [a["output_fields"]["proc.cmdline"] for a in alerts] == [f"mkdir {second}"]
    # the rules watched before the switch still fire after it
    read_shadow(wired)
    for path in (marker, second):
        Path(path).rmdir()
