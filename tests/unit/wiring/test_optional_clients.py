"""The live agent (`--source falco-http`, a real child process) imports the heavy optional
clients only when it is configured to use them: no Kubernetes client without a policy
that calls the API, no boto3 without a snapshot upload, no gRPC exporter without an OTLP
gRPC endpoint, no bcc (LLVM, clang) in the agent process at all. Each costs 12-60 MB of
resident memory. What the agent imported is read from its own import trace
(PYTHONPROFILEIMPORTTIME), after it answered an alert with a (dry-run) policy."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from tests.agent_process import AgentProcess
from tests.conftest import REPO
from tests.receivers import grpc_collector
from tests.unit.wiring.test_agent_config import ALERT, post

POLICY = """\
- policy: answer-shells
  match: {rules: [Terminal shell in container]}
  actions:
    - snapshot: {paths: [/tmp]}
    - kill: {signal: KILL}
  dry_run: true
"""
OPTIONAL = ("kubernetes", "boto3", "botocore", "grpc",
            "opentelemetry.exporter.otlp.proto.grpc", "bcc")


def imported(stderr: str) -> set[str]:
    """Every module name in the agent's import trace."""
    return {m.group(1) for m in re.finditer(r"^import time:.*\|\s*(\S+)\s*$", stderr, re.M)}


def run_agent(tmp_path: Path, env: dict[str, str]) -> set[str]:
    """Start the agent, answer one alert, stop it; the modules it imported."""
    (tmp_path / "policy.yaml").write_text(POLICY)
    audit = tmp_path / "audit.jsonl"
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ENFORCER_"))}
    full.update(env, PYTHONPATH=str(REPO), PYTHONPROFILEIMPORTTIME="1")
    argv = [sys.executable, "-m", "enforcer", "--source", "falco-http",
            "--falco-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
            "--policies", str(tmp_path / "policy.yaml"), "--audit-log", str(audit),
            "--state-dir", str(tmp_path / "state"),
            "--snapshot-dir", str(tmp_path / "snapshots"),
            # the alert's node: an agent refuses alerts meant for another
            "--node-name", json.loads(ALERT)["hostname"]]
    agent = AgentProcess(argv, full, tmp_path, audit, timeout=60)
    try:
        assert agent.falco_port is not None and post(agent.falco_port, ALERT) == 200
        agent.wait("the decision", lambda: [r for r in agent.records()
                                             if r["kind"] == "decision"])
    finally:
        assert agent.stop() == 0, agent.stderr
    return imported(agent.stderr)


def loaded(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


def test_unconfigured_clients_are_never_imported(tmp_path: Path) -> None:
    modules = run_agent(tmp_path, {})
    assert loaded(modules, "enforcer.respond.responder")  # the trace is the agent's
    assert [p for p in OPTIONAL if loaded(modules, p)] == []


def test_a_configured_grpc_exporter_is_imported(tmp_path: Path) -> None:
    """The control: the same observation sees a client the configuration asks for."""
    with grpc_collector() as collector:
        modules = run_agent(tmp_path, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                       "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
                                       "OTEL_EXPORTER_OTLP_INSECURE": "true"})
    assert loaded(modules, "opentelemetry.exporter.otlp.proto.grpc")
    assert not loaded(modules, "kubernetes") and not loaded(modules, "boto3")
