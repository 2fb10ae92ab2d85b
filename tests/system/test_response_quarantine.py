"""Node-local quarantine on a real network namespace "pod": it reaches a TCP server on a
host-side address before, cannot after, and can again after `enforcer release`."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from actions.process import read_stat
from enforcer.alert import Alert
from enforcer.audit.jsonl import JsonlAudit, read_audit
from enforcer.policy.loader import load_policies
from enforcer.priority import Priority
from enforcer.respond.responder import Responder
from tests.system.netns_pod import NetnsPod

pytestmark = [pytest.mark.root]


@pytest.fixture
def pod(need_root: None) -> Iterator[NetnsPod]:
    created = NetnsPod.create()
    yield created
    created.remove()


@contextlib.contextmanager
def tcp_server(address: str) -> Iterator[tuple[str, int]]:
    """A TCP server on a host-side address that accepts (and closes) every connection."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, 0))
    listener.listen(16)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield address, listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.fixture
def server(pod: NetnsPod) -> Iterator[tuple[str, int]]:
    with tcp_server(pod.host_ip) as address:
        yield address


# A server inside the pod: the quarantine's target, and what the host must stop reaching.
POD_SERVER = """
import socket, sys
listener = socket.socket()
listener.bind((sys.argv[1], int(sys.argv[2])))
listener.listen(16)
while True:
    listener.accept()[0].close()
"""
POD_PORT = 8022


def host_can_connect(address: str, port: int) -> bool:
    probe = socket.socket()
    probe.settimeout(1)
    try:
        probe.connect((address, port))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def host_reaches(address: str, port: int, tries: int = 25) -> bool:
    """Reachable, allowing the pod's server a moment to listen."""
    for _ in range(tries):
        if host_can_connect(address, port):
            return True
        time.sleep(0.2)
    return False


def shell_alert(pid: int) -> Alert:
    event = {"proc.pid": pid, "proc.start_ticks": read_stat(pid).start_ticks,
             "container.id": "0123456789ab", "proc.name": "sh"}
    return Alert(rule="Terminal shell in container", priority=Priority.NOTICE, output="shell",
                 output_fields={}, time_ns=time.time_ns(), tags=("container", "shell"),
                 event=event)


def respond(tmp_path: Path, alert: Alert, dry_run: str = "false",
            params: str = "{allow_dns: true}") -> dict[str, Any]:
    path = tmp_path / "policy.yaml"
    path.write_text(f"""
- policy: isolate
  match: {{rules: [Terminal shell in container]}}
  actions: [{{quarantine: {params}}}]
  dry_run: {dry_run}
""")
    audit_path = tmp_path / "audit.jsonl"
    responder = Responder(load_policies([path]), JsonlAudit(audit_path),
                          state_dir=tmp_path / "state").start()
    responder.submit(alert)
    responder.drain()
    responder.stop()
    return [r for r in read_audit(audit_path) if r["kind"] == "action"][-1]


def test_quarantine_cuts_both_ways_and_release_restores(
        tmp_path: Path, pod: NetnsPod, server: tuple[str, int], enforcer_cmd: list[str],
        cli_env: dict[str, str]) -> None:
    host, port = server
    pid = pod.start([sys.executable, "-c", POD_SERVER, pod.pod_ip, str(POD_PORT)])
    assert pod.reaches(host, port), "the pod must reach the server before quarantine"
    assert host_reaches(pod.pod_ip, POD_PORT), "the host must reach the pod before quarantine"

    rec = respond(tmp_path, shell_alert(pid))
    assert rec["outcome"] == "done", rec
    assert rec["target"]["interface"] == pod.host_if
    assert not pod.can_connect(host, port), "quarantined pod still reaches the server"
    assert not host_can_connect(pod.pod_ip, POD_PORT), "the host still reaches into the pod"

    listed = subprocess.run(enforcer_cmd + ["release", "--list", "--state-dir",
                                            str(tmp_path / "state")],
                            capture_output=True, text=True, env=cli_env)
    assert pod.host_if in listed.stdout

    again = respond(tmp_path, shell_alert(pid))
    assert again["outcome"] == "noop", "quarantining twice is a no-op"

    done = subprocess.run(enforcer_cmd + ["release", pod.host_if, "--state-dir",
                                          str(tmp_path / "state")],
                          capture_output=True, text=True, env=cli_env)
    assert done.returncode == 0, done.stderr
    assert f"{pod.host_if}: released" in done.stdout
    assert pod.reaches(host, port), "released pod must reach the server again"
    assert host_reaches(pod.pod_ip, POD_PORT), "the host must reach the released pod again"

    nothing = subprocess.run(enforcer_cmd + ["release", "nosuchif0", "--state-dir",
                                             str(tmp_path / "state")],
                             capture_output=True, text=True, env=cli_env)
    assert nothing.returncode == 1 and "nothing quarantined" in nothing.stderr


def test_release_by_container_id(tmp_path: Path, pod: NetnsPod, server: tuple[str, int],
                                 enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    host, port = server
    pid = pod.start(["sleep", "60"])
    assert respond(tmp_path, shell_alert(pid))["outcome"] == "done"
    assert not pod.can_connect(host, port)
    done = subprocess.run(enforcer_cmd + ["release", "0123456789ab", "--state-dir",
                                          str(tmp_path / "state")],
                          capture_output=True, text=True, env=cli_env)
    assert done.returncode == 0, done.stderr
    assert pod.reaches(host, port)


def test_dry_run_quarantine_touches_nothing(tmp_path: Path, pod: NetnsPod,
                                            server: tuple[str, int]) -> None:
    host, port = server
    pid = pod.start(["sleep", "60"])
    rec = respond(tmp_path, shell_alert(pid), dry_run="true")
    assert rec["outcome"] == "dry-run"
    assert rec["render"]["interface"] == pod.host_if
    assert pod.reaches(host, port)


def test_a_host_network_process_is_refused(tmp_path: Path, pod: NetnsPod) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        time.sleep(0.05)
        rec = respond(tmp_path, shell_alert(proc.pid))
        assert rec["outcome"] == "suppressed" and rec["guard"] == "host-network"
        assert "would cut the node off" in rec["reason"]
    finally:
        proc.kill()
        proc.wait()


def test_allow_listed_cidrs_stay_reachable(tmp_path: Path, pod: NetnsPod,
                                           server: tuple[str, int]) -> None:
    host, port = server
    # another host-side address on the pod's link, with a server the pod reaches before
    other = pod.host_ip.rsplit(".", 1)[0] + ".9"
    with IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=pod.host_if)
        ipr.addr("add", index=index, address=other, prefixlen=24)
    with tcp_server(other) as (_, other_port):
        pid = pod.start(["sleep", "60"])
        assert pod.reaches(other, other_port), "the pod must reach the other server before"
        rec = respond(tmp_path, shell_alert(pid), params=f"{{allowed_cidrs: [{host}/32]}}")
        assert rec["outcome"] == "done", rec
        assert pod.reaches(host, port), "the forensics allow-list must stay reachable"
        assert not pod.can_connect(other, other_port), "anything else must be cut"
