"""Attack: flood the agent's ring buffer so that a container's start is never seen, and
read /etc/shadow from it. The records of the container's processes (their fork and exec)
are lost, so the table never applies the changes the kernel stamped for them, and
without more the in-kernel kill would never arm the container again: every later
`cat /etc/shadow` in it would read the file (only the userspace kill answering, after the
read). The agent arms a process it never saw start at the first record of it that comes,
re-reads a dependency from /proc once the change the kernel stamped for it is a second old
(enforcer.kernel.arming RESYNC_AFTER_NS; here the runtime's conmon, whose fork was lost) and
arms what depends on it again, so within a few tries after the flood the container's cat
dies in the kernel. With the re-read switched off every try reads the file.

Real kernel, real podman. The ring is made small by Falco's own setting
(`-o engine.modern_ebpf.buf_size_preset=1`, one ring of 1 MiB, some 570 records). The agent
is held (SIGSTOP) while the flood fills the ring and the container starts, as a loaded node
may deschedule it: without the hold, whether the flood wins the race for the container's
records is the scheduler's choice, and a test that passes without losing them proves
nothing. The kill policy acts only on this test's uniquely named container."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.system.conftest import podman_run
from tests.system.test_blast_radius import eventually, metric, start_agent, stop
from tests.system.test_blast_radius_containers import POLICY, arming_trace, rules_for

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

TRIES = 40  # tries after the flood; the kernel kills from the second or third on
# opens of a path the loaded rules watch (the READY_RULE of rules_for): each one crosses
# the kernel's filter into the ring; the flooder says so once it has sent far more than
# the ring holds, and goes on until it is killed
FLOODER = ("import os, sys\n"
           "n = 0\n"
           "while True:\n"
           "    os.close(os.open('/etc/hostname', os.O_RDONLY))\n"
           "    n += 1\n"
           "    if n == 20000:\n"
           "        print('flooding', flush=True)\n")


def test_a_container_started_during_a_flood_is_killed_in_the_kernel_after_it(
        need_root: None, ebpf_ready: None, podman_ready: None, tmp_path: Path,
        enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    """Threat: root in a container floods the ring (any workload can) while its next
    container starts, so that the agent never sees that container's processes start.
    The flood loses records (the drop counter says so), and still, within TRIES tries
    after it, the container's `cat /etc/shadow` dies in the kernel before reading."""
    name = f"flood-resync-{uuid.uuid4().hex[:8]}"
    sync = tmp_path / "sync"
    sync.mkdir()
    agent, _audit, err, port = start_agent(
        tmp_path, enforcer_cmd, {**cli_env, "ENFORCER_TRACE_ARMING": "1"},
        rules_for(tmp_path, name), POLICY,
        "-o", "engine.modern_ebpf.buf_size_preset=1",
        "-o", "engine.modern_ebpf.cpus_for_each_buffer=0")
    assert "enforcer: ring buffer 1024 KiB" in err.read_text()
    # the container's shell (its PID 1: busybox's `sh -c` runs the script itself) says it
    # runs, reads /etc/hostname until the test says go (the agent knows the container by
    # that alert), then tries: each try prints its number, cat's exit status and the bytes
    # it wrote ("137 0": killed before the read)
    script = ("touch /sync/started; "
              "while [ ! -e /sync/go ]; do cat /etc/hostname > /dev/null; sleep 0.2; done; "
              f"i=0; while [ $i -lt {TRIES} ] && [ ! -e /sync/stop ]; do i=$((i+1)); "
              "cat /etc/shadow > /tmp/out; s=$?; echo $i $s $(wc -c < /tmp/out); "
              "sleep 0.3; done")
    flooder = None
    held = False
    try:
        with ThreadPoolExecutor(1) as pool:
            try:
                os.kill(agent.pid, signal.SIGSTOP)
                held = True
                flooder = subprocess.Popen([sys.executable, "-c", FLOODER],
                                           stdout=subprocess.PIPE, text=True)
                assert flooder.stdout is not None
                assert flooder.stdout.readline() == "flooding\n"
                done = pool.submit(podman_run, "sh", "-c", script, name=name,
                                   extra=("-v", f"{sync}:/sync"))
                eventually(lambda: done.done() or (sync / "started").exists(),
                           "the container never started", timeout=120)
                assert not done.done(), done.result().stderr[-2000:]
                # the ring has been full since before the container's start: every record
                # of its processes so far is lost
                flooder.kill()
                flooder.wait()
                os.kill(agent.pid, signal.SIGCONT)
                held = False
                eventually(lambda: metric(port, "enforcer_kernel_drops_total") > 0,
                           "the flood lost no record: the test proves nothing", timeout=60)
                eventually(lambda: done.done() or known(tmp_path, name),
                           f"the agent never knew the container {name}", timeout=120)
                assert metric(port, "enforcer_in_kernel_kills_total") == 0
                drops = metric(port, "enforcer_kernel_drops_total")
                (sync / "go").touch()
                # until the kernel has killed one try, or the container is done trying
                eventually(lambda: done.done()
                           or metric(port, "enforcer_in_kernel_kills_total") > 0,
                           "the container never finished its tries", timeout=300)
            finally:
                if held:
                    os.kill(agent.pid, signal.SIGCONT)
                if flooder is not None and flooder.poll() is None:
                    flooder.kill()
                    flooder.wait()
                (sync / "go").touch()  # the container ends whatever happened
                (sync / "stop").touch()
        result = done.result()
        kernel_kills = metric(port, "enforcer_in_kernel_kills_total")
    finally:
        stop(agent)
    tries = [line.split() for line in result.stdout.splitlines()]
    killed = [int(n) for n, status, size in tries if (status, size) == ("137", "0")]
    sys.stderr.write(f"flood-resync: {drops:.0f} records lost, {len(tries)} tries, the first "
                     f"killed in the kernel: {killed[:1]}\n")
    assert kernel_kills >= 1 and killed, (
        f"no try died in the kernel: {tries}\n{result.stderr[-2000:]}\n"
        + arming_trace(tmp_path))


def known(tmp: Path, name: str) -> bool:
    """Whether the agent has said (by the ready rule's alert) that it knows the container."""
    alerts = tmp / "alerts.jsonl"
    return alerts.exists() and any(
        json.loads(line).get("rule") == f"BR container known {name}"
        for line in alerts.read_text().splitlines() if line.strip())
