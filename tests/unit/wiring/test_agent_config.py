"""The live agent (`--source falco-http`, a real child process) configured by a --config
file: its tracing block chooses the OTLP exporter over the OTEL_* variables, a file silent
on tracing leaves them in charge, and its batch limits reach the span processor."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_process import AgentProcess
from tests.conftest import REPO
from tests.receivers import grpc_collector, otlp_collector
from tests.unit.observe.conftest import OtlpReceiver

ALERT = (REPO / "tests" / "data" / "falco-alerts" / "terminal_shell_k8s.json").read_bytes()
# Two actions, both skipped (Falco's alert has no proc.pid): four spans per detection.
POLICY = """\
- policy: answer-shells
  match: {rules: [Terminal shell in container]}
  actions:
    - snapshot: {paths: [/tmp]}
    - kill: {signal: KILL}
  dry_run: true
"""
SPANS_PER_DETECTION = 4


def post(port: int, body: bytes) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def start_agent(tmp_path: Path, config: str, env: dict[str, str]) -> AgentProcess:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "enforcer.yaml").write_text(config)
    audit = tmp_path / "audit.jsonl"
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "ENFORCER_"))}
    full.update(env, PYTHONPATH=str(REPO))
    argv = [sys.executable, "-m", "enforcer", "--source", "falco-http",
            "--config", str(tmp_path / "enforcer.yaml"), "--falco-http-addr", "127.0.0.1:0",
            "--http-addr", "127.0.0.1:0", "--policies", str(tmp_path / "policy.yaml"),
            "--audit-log", str(audit), "--node-name", "falco-7xk2p"]
    return AgentProcess(argv, full, tmp_path, audit, timeout=60)


def detections(agent: AgentProcess) -> list[dict[str, Any]]:
    return [r for r in agent.records() if r["kind"] == "decision"]


@pytest.fixture
def decoy() -> Iterator[OtlpReceiver]:
    """Where the OTEL_* variables point: must receive nothing when the file says otherwise."""
    with otlp_collector() as receiver:
        yield receiver


def test_the_file_chooses_http_protobuf_and_its_endpoint_over_otel(
        tmp_path: Path, decoy: OtlpReceiver) -> None:
    with otlp_collector() as collector:
        agent = start_agent(tmp_path, f"""
tracing:
  protocol: http/protobuf
  endpoint: {collector.endpoint}
  batch: {{schedule_delay: 50ms}}
""", {"OTEL_EXPORTER_OTLP_ENDPOINT": decoy.endpoint,
      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": decoy.endpoint + "/v1/traces",
      "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
        try:
            assert "traces exported over OTLP" in agent.ready_line
            assert agent.falco_port is not None and post(agent.falco_port, ALERT) == 200
            (decision,) = agent.wait("the decision", lambda: detections(agent))
            spans = collector.wait_for(lambda got: len(got) >= SPANS_PER_DETECTION)
        finally:
            assert agent.stop() == 0, agent.stderr
    assert {s.trace_id for s in spans} == {decision["trace_id"]}
    assert sorted(s.name for s in spans) == ["enforcer.action", "enforcer.action",
                                             "enforcer.decision", "enforcer.match"]
    assert set(collector.content_types) == {"application/x-protobuf"}
    assert decoy.requests == 0 and decoy.content_types == []


def test_a_file_silent_on_tracing_leaves_otel_in_charge_grpc(tmp_path: Path) -> None:
    with grpc_collector() as collector:
        agent = start_agent(tmp_path, "extra_fields: {cluster: test}\n", {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "50"})
        try:
            assert agent.falco_port is not None and post(agent.falco_port, ALERT) == 200
            (decision,) = agent.wait("the decision", lambda: detections(agent))
            spans = collector.wait_for(lambda got: len(got) >= SPANS_PER_DETECTION)
            alert = agent.wait("the alert", lambda: agent.alerts())[0]
        finally:
            assert agent.stop() == 0, agent.stderr
    assert {s.trace_id for s in spans} == {decision["trace_id"]}
    assert set(collector.content_types) == {"grpc"}
    assert alert["output_fields"]["cluster"] == "test"  # the file's other settings apply


def test_batch_limits_from_the_file_drop_spans_not_records(tmp_path: Path) -> None:
    queue_size, batch_size, n = 8, 4, 12
    with otlp_collector() as collector:
        collector.hold()  # the collector hangs: every request is held unanswered
        agent = start_agent(tmp_path, f"""
tracing:
  protocol: http/protobuf
  endpoint: {collector.endpoint}
  timeout: 2m
  batch:
    max_queue_size: {queue_size}
    max_export_batch_size: {batch_size}
    schedule_delay: 10ms
""", {})
        try:
            assert agent.falco_port is not None and post(agent.falco_port, ALERT) == 200
            agent.wait("the first decision", lambda: detections(agent))
            collector.wait_held()  # the exporter is stuck in its first request
            for _ in range(n - 1):
                assert post(agent.falco_port, ALERT) == 200
            agent.wait(f"{n} decisions", lambda: len(detections(agent)) == n)
            collector.release()
        finally:
            assert agent.stop() == 0, agent.stderr
        received = len(collector.spans)
    # Every record is in the audit log ...
    records = agent.records()
    assert len([r for r in records if r["kind"] == "decision"]) == n
    assert len([r for r in records if r["kind"] == "action"]) == 2 * n
    # ... while the span queue held at most max_queue_size behind the batch that hung.
    assert 0 < received <= queue_size + batch_size < n * SPANS_PER_DETECTION
