"""Fixtures for the attack tests: an agent without eBPF (the falco-http source, dry-run) in
its own temp dir, driven from outside like a DaemonSet's kubelet and an attacker would."""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_process import AgentProcess
from tests.conftest import REPO

POLICY = """\
- policy: answer-shells
  match: {rules: [Terminal shell in container], priority: ">=notice"}
  actions:
    - kill: {signal: KILL}
  dry_run: true
"""


def rss_kib(pid: int) -> int:
    """The process's resident set size in KiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def raise_nofile(needed: int) -> None:
    """Let this test process hold `needed` sockets (the soft limit is often 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} < {needed}: raise it (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def start_agent(work: Path, *extra: str, policy: str = POLICY,
                audit: Path | None = None) -> AgentProcess:
    """A falco-http agent (dry-run unless `policy` says otherwise and a token is given) with
    its own policies and audit log in `work` (no store: its queue of 10 000 records would
    hide what the tests measure)."""
    (work / "policies").mkdir(exist_ok=True)
    (work / "policies" / "answer.yaml").write_text(policy)
    audit = audit or work / "audit.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(REPO)
    dry = ["--dry-run"] if "dry_run: true" in policy else []
    argv = [sys.executable, "-m", "enforcer", "--source", "falco-http", *dry,
            "--falco-http-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
            "--policies", str(work / "policies"), "--audit-log", str(audit), *extra]
    return AgentProcess(argv, env, work, audit, timeout=60)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    proc = start_agent(tmp_path, "--node-name", "node-a")
    yield proc
    assert proc.stop() == 0, proc.stderr
