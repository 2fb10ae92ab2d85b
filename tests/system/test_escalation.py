"""Escalation on a real network-namespace "pod": a persistent attacker whose process shrugs
off the policy's kill (it ignores SIGTERM) keeps triggering it; the fifth repeat within the
window quarantines the pod, which then reaches nothing, while the first four did not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from actions.process import read_stat
from enforcer.alert import Alert
from enforcer.audit.jsonl import JsonlAudit, read_audit
from enforcer.policy.loader import load_policies
from enforcer.priority import Priority
from enforcer.respond.responder import Responder
from tests.system.netns_pod import NetnsPod
from tests.system.test_response_quarantine import server  # noqa: F401 - a fixture

pytestmark = [pytest.mark.root]

STUBBORN = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
           "time.sleep(120)"
POLICY = """
- policy: stop-shells
  match: {rules: [Terminal shell in container]}
  actions: [{kill: {signal: TERM}}]
  dry_run: false
  escalate: {after: 5, within: 1m, actions: [{quarantine: {allow_dns: true}}]}
"""


@pytest.fixture
def pod(need_root: None) -> Iterator[NetnsPod]:
    created = NetnsPod.create(subnet=214)
    yield created
    created.remove()


@pytest.fixture
def attacker(pod: NetnsPod) -> Iterator[int]:
    """A process in the pod that ignores SIGTERM; not a child of this test (whose
    descendants the kill's guards spare, as the agent's)."""
    marker = f"enf-esc-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "exec", pod.name, "setsid", "-f", sys.executable, "-c",
                    STUBBORN, marker], check=True)
    pid = None
    deadline = time.monotonic() + 10
    while pid is None and time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
                # the python itself, not `ip netns exec` or `setsid` on their way out
                if argv[0] == sys.executable.encode() and marker.encode() in argv:
                    pid = int(entry)
            except (OSError, ValueError):
                continue
        time.sleep(0.05)
    assert pid is not None, "the attacker never started"
    while not _ignores_sigterm(pid):  # python's start-up: not yet
        assert time.monotonic() < deadline, "the attacker never ignored SIGTERM"
        time.sleep(0.05)
    yield pid
    os.kill(pid, signal.SIGKILL)


def _ignores_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def repeat(pid: int) -> Alert:
    event = {"proc.pid": pid, "proc.start_ticks": read_stat(pid).start_ticks,
             "container.id": "0123456789ab", "proc.name": "sh"}
    return Alert(rule="Terminal shell in container", priority=Priority.NOTICE, output="shell",
                 output_fields={}, time_ns=time.time_ns(), tags=("container", "shell"),
                 event=event)


def test_the_fifth_repeat_quarantines_the_pod(tmp_path: Path, pod: NetnsPod, attacker: int,
                                             server: tuple[str, int]) -> None:  # noqa: F811
    host, port = server
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    audit_path = tmp_path / "audit.jsonl"
    responder = Responder(load_policies([path]), JsonlAudit(audit_path),
                          state_dir=tmp_path / "state", realtime=False).start()
    try:
        for _ in range(4):
            responder.submit(repeat(attacker))
        responder.drain()
        assert pod.reaches(host, port), "four repeats must not quarantine the pod"
        responder.submit(repeat(attacker))
        responder.drain()
    finally:
        responder.stop()
    records = list(read_audit(audit_path))
    actions = [(r["action"], r["outcome"]) for r in records if r["kind"] == "action"]
    last = [(r.get("action"), r["outcome"], r.get("message")) for r in records[-3:]]
    assert not pod.can_connect(host, port), ("the fifth repeat did not quarantine the pod",
                                             last)
    assert actions == [("kill", "done")] * 5 + [("quarantine", "done")]
    escalated = [r for r in read_audit(audit_path) if r["kind"] == "decision"
                 and (r.get("detail") or {}).get("escalated")]
    assert len(escalated) == 1
