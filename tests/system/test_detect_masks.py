"""Per-process detection masks in the real kernel (issue 17): a process for which no rule
can match a syscall does not send its records of it to userspace, while a process for
which one can still does, and the rule fires.

With the stable rules, connects and sends are matched only in containers. A host python
process (marked in its command line) is held until the agent has written its mask, then
makes refused TCP connects and UDP sends: none of their records may cross. A podman
container (unique name) then connects out, and a rule on that container's connects fires.
Root; the host process is the test's own, the container has a unique name."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from enforcer.kernel.detection_masks import BIT
from enforcer.sources.probe import ProbeConfig
from tests.system.agent_harness import LiveAgent
from tests.system.conftest import podman_run

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

DATA = Path(__file__).parents[1] / "data" / "falco-rules"
MARK = "i17mask" + uuid.uuid4().hex[:8]
NAME = f"{MARK}-ctr"
CONTAINER_RULE = f"""
- rule: Connect from container {MARK}
  desc: any connect from this test's container, whatever its result
  condition: evt.type = connect and container.name = {NAME}
  output: "%proc.name %fd.name"
  priority: NOTICE
"""
# refused TCP connects and UDP sends with an address, once told to go
CHILD = f"""
import socket, sys
sys.stdin.readline()
for _ in range(200):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", 9))
    except OSError:
        pass
    s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(200):
    u.sendto(b"x", ("127.0.0.1", 9))
print("done", flush=True)
sys.stdin.readline()  # {MARK}
"""


@pytest.fixture
def live(ebpf_ready: None, podman_ready: None, tmp_path: Path) -> Iterator[LiveAgent]:
    rules = tmp_path / "container_connect.yaml"
    rules.write_text(CONTAINER_RULE)
    agent = LiveAgent([str(DATA / "falco_rules.yaml"), str(rules)],
                      probe_config=ProbeConfig(agent_tgid=os.getpid(), quiet_masks=True))
    yield agent
    agent.close()


def _crossing(live: LiveAgent, pid: int, names: set[str]) -> list[str]:
    """Count, from now on, the records of `pid` for these syscalls that reach userspace."""
    seen: list[str] = []
    tracker = live.agent.tracker
    assert tracker is not None
    apply = tracker.apply

    def counting(rec: dict) -> object:
        if rec.get("proc.pid") == pid and rec.get("evt.type") in names:
            seen.append(rec["evt.type"])
        return apply(rec)

    tracker.apply = counting  # type: ignore[method-assign]
    return seen


def test_a_host_process_no_rule_can_match_sends_no_connects_and_a_container_still_fires(
        live: LiveAgent) -> None:
    masks = live.agent.masks
    assert masks is not None, "the agent runs without detection masks"
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        seen = _crossing(live, child.pid, {"connect", "sendto"})
        deadline = time.monotonic() + 30
        entry = None
        while time.monotonic() < deadline:  # its exec record applied, its mask written
            entry = masks.entries.get(child.pid)
            if entry is not None:
                break
            time.sleep(0.05)
        assert entry is not None, "no mask for the host process"
        assert entry.quiet & BIT["connect"] and entry.quiet & BIT["sendto"], hex(entry.quiet)
        assert not entry.quiet & BIT["openat"]  # the stable rules read a host's opens
        before = live.agent.quiet_dropped()
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        live.barrier()  # every record the child made has been read by now
        assert seen == [], f"{len(seen)} records crossed: {sorted(set(seen))}"
        # 200 refused connects and 200 sends, at least, dropped by the masks
        assert live.agent.quiet_dropped() - before >= 400
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(10)
    # a container's connect: the container-only rule still fires
    podman_run("sh", "-c", "nc -w 1 127.0.0.1 9 </dev/null; true", name=NAME)
    alert = live.wait(f"Connect from container {MARK}")
    assert alert.event.get("container.name") == NAME
