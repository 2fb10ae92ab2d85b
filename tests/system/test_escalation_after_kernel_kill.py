"""Escalation after in-kernel kills, in a real podman container with its own network.

Threat: root in one container keeps reading /etc/shadow. Each attempt dies in the kernel
before it reads a byte; the fifth within the window quarantines the container. By then the
process that matched is dead (the kernel killed it at the syscall), so the quarantine must
find the container's network namespace through another of its live processes, not through
the dead pid: the container reaches the host before, and nothing after.

The rule is narrowed to this test's uniquely named container (`container.name`)."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.test_blast_radius import records, start_agent, stop
from tests.system.test_blast_radius_containers import arming_trace, attack_when_known, rules_for

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

POLICY = ("- policy: kill-shadow-readers\n"
          "  match: {rules: [Read sensitive file untrusted]}\n"
          "  actions: [{kill: {signal: KILL, in_kernel: true}}]\n"
          "  dry_run: false\n"
          "  escalate: {after: 5, within: 1m, actions: [{quarantine: {allow_dns: false}}]}\n")


@pytest.fixture
def host_server() -> Iterator[int]:
    """A TCP server of the test's own on every host address (the container reaches it
    through its bridge's gateway) that greets each connection with "hi": its port."""
    listener = socket.create_server(("0.0.0.0", 0))
    listener.settimeout(0.5)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"hi\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stopping.set()
    thread.join(5)
    listener.close()


def test_the_fifth_kernel_kill_quarantines_the_container(
        need_root: None, ebpf_ready: None, podman_ready: None, tmp_path: Path,
        host_server: int, enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    name = f"br-escalate-{uuid.uuid4().hex[:8]}"
    agent, audit, err, port = start_agent(tmp_path, enforcer_cmd,
                                          {**cli_env, "ENFORCER_TRACE_ARMING": "1"},
                                          rules_for(tmp_path, name), POLICY)
    reach = f'[ "$(nc -w 2 $gw {host_server} </dev/null)" = hi ]'
    attack = (
        "gw=$(ip route | awk \"/default/ {print \\$3}\"); "
        f"{reach} && echo reach-before || echo noreach-before; "
        "i=0; while [ $i -lt 5 ]; do i=$((i+1)); "
        "cat /etc/shadow > /tmp/out; echo $? $(wc -c < /tmp/out); done; "
        # the quarantine comes from the agent's slow lane: wait for it (up to 60 s)
        f"n=0; while [ $n -lt 60 ]; do if {reach}; then "
        "sleep 0.5; n=$((n+1)); else echo cut; break; fi; done; echo end")
    try:
        done = attack_when_known(tmp_path, name, attack,
                                 labels={"io.kubernetes.pod.name": name,
                                         "io.kubernetes.pod.namespace": f"ns-{name}"})
    finally:
        stop(agent)
    assert done.stdout.splitlines() == ["reach-before"] + ["137 0"] * 5 + ["cut", "end"], \
        done.stdout + done.stderr[-2000:] + err.read_text()[-3000:] + arming_trace(tmp_path)
    recs = records(audit)
    quarantines = [r for r in recs if r["kind"] == "action" and r["action"] == "quarantine"]
    assert [r["outcome"] for r in quarantines] == ["done"], quarantines
    # the matched process was dead: the namespace came from another process of the container
    assert "is gone; found through pid" in quarantines[0]["message"]
