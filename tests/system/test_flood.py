"""An event flood through a deliberately small ring buffer: the agent survives, counts
every record the kernel could not deliver, and says so."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from enforcer.resources import default_rules_dir
from enforcer.sources.probe import ProbeConfig
from tests.system.agent_harness import LiveAgent

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

N = 20000
FLOOD = f"""
import os
for _ in range({N}):
    fd = os.open("/etc/shadow", os.O_RDONLY)
    os.close(fd)
print(os.getpid())
"""


def test_flood_survives_and_drops_are_counted(ebpf_ready: None) -> None:
    live = LiveAgent([str(default_rules_dir())],
                     ProbeConfig(agent_tgid=os.getpid(), ringbuf_pages=16))  # 64 KiB
    try:
        before = live.agent.source.drops()
        res = subprocess.run([sys.executable, "-c", FLOOD], capture_output=True, text=True,
                             check=True, timeout=120)
        pid = int(res.stdout.strip())
        live.barrier()  # the agent still detects after the flood
        seen = len(live.find("Read sensitive file untrusted",
                             lambda a: a.event.get("proc.pid") == pid))
        dropped = live.agent.source.drops() - before
        # honest: every open is either delivered or counted as dropped (other processes'
        # drops can only add to the count)
        assert seen + dropped >= N, (seen, dropped)
        assert seen > 0
        if dropped:
            live.agent._check_drops()
            assert live.agent.drops.occurrences >= 1
            assert "syscall event drop" in live.stderr.getvalue()
            assert f"event drop detected: {live.agent.drops.occurrences} occurrences" in (
                live.agent.summary())
    finally:
        live.close()
