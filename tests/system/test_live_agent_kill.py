"""End to end on the live agent (lands with the `ebpf` branch): real eBPF detection of a
/etc/shadow read, a kill policy, SIGKILL through the responder, and the audit record.

Skipped until enforcer.agent exists on this branch; after the merge it must pass (it needs
the live event's `proc.pid.ts` and the responder wired into `enforcer` — see the merge
notes of the respond branch)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.system.victims import SHADOW_READER, spawn

pytest.importorskip("enforcer.agent", reason="the live agent lands with the ebpf branch")

pytestmark = [pytest.mark.root, pytest.mark.ebpf]


def test_the_live_agent_kills_a_shadow_reader(need_root: None, tmp_path: Path,
                                              enforcer_cmd: list[str],
                                              cli_env: dict[str, str]) -> None:
    policy = tmp_path / "kill.yaml"
    policy.write_text("- policy: kill-shadow-readers\n"
                      "  match: {rules: [Read sensitive file untrusted]}\n"
                      "  actions: [{kill: {signal: KILL}}]\n"
                      "  dry_run: false\n")
    audit = tmp_path / "audit.jsonl"
    err = (tmp_path / "agent.err").open("w")
    agent = subprocess.Popen(enforcer_cmd + ["--policies", str(policy), "--audit-log",
                                             str(audit), "--http-addr", "127.0.0.1:0"],
                             stdout=subprocess.DEVNULL, stderr=err, env=cli_env)
    try:
        deadline = time.monotonic() + 120
        while "enforcer: ready" not in (tmp_path / "agent.err").read_text():
            assert agent.poll() is None, (tmp_path / "agent.err").read_text()
            assert time.monotonic() < deadline, "the agent never became ready"
            time.sleep(0.1)
        victim = spawn(SHADOW_READER, tmp_path)
        assert victim.exit_code(timeout=10) == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while True:
            records = [json.loads(line) for line in audit.read_text().splitlines()]
            kills = [r for r in records if r["kind"] == "action" and r["action"] == "kill"
                     and r["target"]["pid"] == victim.pid]
            if kills or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        (kill,) = kills
        assert kill["outcome"] == "done" and kill["render"]["signal"] == "SIGKILL"
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=20)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        err.close()
    assert "Responses by action and outcome:" in (tmp_path / "agent.err").read_text()
