"""Threat: the audit log's disk fills up (a noisy workload, or an attacker filling a shared
volume on purpose) just as the log rotates. The audit log is the durable record of every
decision: a failed reopen must not leave every later record failing, silently, after space
returns, and while it lasts the failure must be visible (/metrics, /readyz)."""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.conftest import start_agent
from tests.agent_process import AgentProcess
from tests.conftest import REPO

pytestmark = pytest.mark.root

ALERT = json.loads((REPO / "tests" / "data" / "falco-alerts" / "terminal_shell_k8s.json")
                   .read_text())
ALERT["hostname"] = "node-a"
BODY = json.dumps(ALERT).encode()


@contextlib.contextmanager
def tiny_tmpfs(where: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs with 16 inodes, mounted at `where` for the test and unmounted after."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,nr_inodes=16,mode=0700",
                    "enforcer-test-audit", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(where: Path) -> list[Path]:
    """Use every block and every inode left on `where`'s filesystem."""
    made = []
    big = where / "filler-blocks"
    made.append(big)
    with big.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)
    for i in range(100):
        path = where / f"filler-{i}"
        try:
            path.touch()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            break
        made.append(path)
    return made


def post(agent: AgentProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", agent.falco_port or 0, timeout=10)
    try:
        conn.request("POST", "/", body=BODY, headers={"Content-Type": "application/json"})
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def all_records(where: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(where.glob("audit.jsonl*")):
        for line in path.read_text().splitlines():
            records.append(json.loads(line))  # every line whole: none torn by a short write
    return records


def test_rotation_on_a_full_disk_loses_no_record(tmp_path: Path, need_root: None) -> None:
    with tiny_tmpfs(tmp_path / "audit") as disk:
        agent = start_agent(tmp_path, "--node-name", "node-a", "--audit-max-bytes", "4Ki",
                            "--audit-unready-on-failure", audit=disk / "audit.jsonl")
        try:
            post(agent)
            agent.wait("the first decision", lambda: [
                r for r in all_records(disk) if r["kind"] == "decision"])
            fillers = fill(disk)
            # Each alert writes three records (~1.5 KiB): rotation is due within a few.
            sent = 1
            for _ in range(8):
                post(agent)
                sent += 1
            agent.wait("write failures on /metrics", lambda: agent.metric(
                "enforcer_audit_write_failures_total") > 0)
            status, body = agent.get("/readyz")
            assert status == 503 and "audit" in json.loads(body)["conditions"]
            assert agent.metric("enforcer_audit_pending_records") > 0

            for path in fillers:
                os.unlink(path)  # space (and inodes) come back
            post(agent)
            sent += 1
            decisions = agent.wait("every decision in the log", lambda: (
                lambda found: found if len(found) >= sent else None)(
                    [r for r in all_records(disk) if r["kind"] == "decision"]))
            assert agent.get("/readyz")[0] == 200
            assert agent.metric("enforcer_audit_pending_records") == 0
        finally:
            assert agent.stop() == 0, agent.stderr
        records = all_records(disk)
        assert len([r for r in records if r["kind"] == "decision"]) == sent
        assert len({r["match_id"] for r in decisions}) == sent  # no duplicate, none lost
        assert len(list(disk.glob("audit.jsonl.*"))) >= 1  # it did rotate in the end
