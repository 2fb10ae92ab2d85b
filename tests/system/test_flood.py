"""An event flood through a deliberately small ring buffer that the agent is kept from
reading: the ring overruns for sure, the agent survives, counts every record the kernel
could not deliver, and says so."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from enforcer.resources import default_rules_dir
from enforcer.sources.probe import ProbeConfig
from tests.system.agent_harness import LiveAgent, only_tgid

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

N = 20000
# Opens /etc/shadow N times once told to go; then waits to be told to exit.
FLOOD = """
import os, sys
sys.stdin.readline()
for _ in range(int(sys.argv[1])):
    os.close(os.open("/etc/shadow", os.O_RDONLY))
print("done", flush=True)
sys.stdin.readline()
"""


class Gate:
    """Stands in for the agent's source.poll: holds the agent's reader until opened."""

    def __init__(self, poll: Any):
        self._poll = poll
        self.held = threading.Event()
        self.opened = threading.Event()

    def __call__(self, timeout_ms: int = 100) -> Any:
        if not self.opened.is_set():
            self.held.set()
            self.opened.wait()
        return self._poll(timeout_ms)


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_flood_survives_and_drops_are_counted(ebpf_ready: None, threshold: float) -> None:
    """Threshold 0 (ours): every drop is said. Threshold 1 (Falco's maximum): no share of
    dropped events can exceed it, so the drops are counted and nothing is said."""
    flooder = subprocess.Popen([sys.executable, "-c", FLOOD, str(N)], text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert flooder.stdin is not None and flooder.stdout is not None
    # the flooder's events alone (a shared machine's cannot fill the ring or be counted),
    # in a ring of 64 KiB
    live = LiveAgent([str(default_rules_dir())],
                     ProbeConfig(ringbuf_pages=16, extra_defines=only_tgid(flooder.pid)))
    live.agent.drops.threshold = threshold
    drop_alerts: list[Any] = []
    live.agent.drops.on_drop = ("log", "alert")
    live.agent.drops.alert = drop_alerts.append
    try:
        assert live.agent.source is not None
        gate = Gate(live.agent.source.poll)
        live.agent.source.poll = gate  # type: ignore[method-assign]
        assert gate.held.wait(10), "the agent's reader never came back for records"
        flooder.stdin.write("go\n")
        flooder.stdin.flush()
        assert flooder.stdout.readline() == "done\n"
        gate.opened.set()

        def seen() -> int:
            return len(live.find("Read sensitive file untrusted",
                                 lambda a: a.event.get("proc.pid") == flooder.pid))

        # every open is either delivered (and alerted on) or counted as dropped
        deadline = time.monotonic() + 60
        while seen() + live.agent.source.drops() < N:
            assert time.monotonic() < deadline, (seen(), live.agent.source.drops())
            time.sleep(0.05)
        dropped = live.agent.source.drops()
        assert 0 < dropped < N, "the ring did not overrun (or took nothing)"
        assert seen() == N - dropped
        # the agent notices, on its own (it checks its counters every second) ...
        deadline = time.monotonic() + 30
        while live.agent.drops.intervals_with_drops < 1:
            assert time.monotonic() < deadline, live.stderr.getvalue()
            time.sleep(0.05)
        # the kernel counted them by event type and CPU (Falco's drop kinds and per-CPU
        # metrics come from these): the flood was all opens, done before the reader woke
        by_event, by_cpu = live.agent.drop_counts
        assert by_event == {"openat": dropped} and sum(by_cpu.values()) == dropped
        if threshold == 1.0:  # ... and the threshold keeps it quiet
            assert live.agent.drops.occurrences == 0
            assert "syscall event drop" not in live.stderr.getvalue()
            return
        # ... and says so
        while "syscall event drop" not in live.stderr.getvalue():
            assert time.monotonic() < deadline, live.stderr.getvalue()
            time.sleep(0.05)
        assert live.agent.drops.occurrences >= 1
        # the alert breaks the first interval's drops down as Falco's does: all were opens
        # (the reader was held until the flood was over, so that interval has them all)
        fields = drop_alerts[0].output_fields
        assert fields["n_drops"] == fields["n_drops_buffer_open_exit"] == dropped
        assert fields["n_drops_buffer_execve_exit"] == 0
        assert f"event drop detected: {live.agent.drops.occurrences} occurrences" in (
            live.agent.summary())
    finally:
        flooder.kill()
        flooder.wait()
        live.close()
