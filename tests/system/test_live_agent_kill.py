"""End to end on the live agent: real eBPF detection of a /etc/shadow read, a kill policy,
SIGKILL through the responder, and the audit record.

The machine is shared: the rule is narrowed (a Falco `append`) to processes whose command
line carries this test's marker, so that the agent never kills anyone else's reader."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest

from tests.agent_process import AgentProcess
from tests.system.victims import SHADOW_READER, shadow_rules_only_for, spawn

pytestmark = [pytest.mark.root, pytest.mark.ebpf]


def test_the_live_agent_kills_a_shadow_reader(need_root: None, ebpf_ready: None,
                                              tmp_path: Path, enforcer_cmd: list[str],
                                              cli_env: dict[str, str]) -> None:
    marker = f"enforcer-live-kill-{uuid.uuid4().hex[:10]}"
    rules = shadow_rules_only_for(tmp_path / "rules", f"proc.cmdline contains {marker}")
    policy = tmp_path / "kill.yaml"
    policy.write_text("- policy: kill-shadow-readers\n"
                      "  match: {rules: [Read sensitive file untrusted]}\n"
                      "  actions: [{kill: {signal: KILL}}]\n"
                      "  dry_run: false\n")
    audit = tmp_path / "audit.jsonl"
    agent = AgentProcess(enforcer_cmd + ["--rules", str(rules), "--policies", str(policy),
                                         "--audit-log", str(audit),
                                         "--http-addr", "127.0.0.1:0"],
                         cli_env, tmp_path, audit)
    try:
        # a reader without the marker is not this test's: left alone
        bystander = spawn(SHADOW_READER, tmp_path, name="bystander")
        victim = spawn(SHADOW_READER + [marker], tmp_path)
        assert victim.exit_code(timeout=10) == -signal.SIGKILL
        kill = agent.wait("the kill's audit record", lambda: [
            r for r in agent.records() if r["kind"] == "action" and r["action"] == "kill"
            and r["target"]["pid"] == victim.pid])[0]
        assert kill["outcome"] == "done" and kill["render"]["signal"] == "SIGKILL"
        assert bystander.alive()
        assert not [r for r in agent.records() if r["kind"] == "action"
                    and r["target"].get("pid") == bystander.pid]
        bystander.cleanup()
    finally:
        agent.stop()
    assert "Responses by action and outcome:" in agent.stderr
