"""Node-local quarantine on a real network namespace "pod": it reaches a TCP server on a
host-side address before, cannot after, and can again after `enforcer release`."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture
def server(pod: NetnsPod) -> Iterator[tuple[str, int]]:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((pod.host_ip, 0))
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
    yield pod.host_ip, listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


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
    pid = pod.start(["sleep", "60"])
    assert pod.reaches(host, port), "the pod must reach the server before quarantine"

    rec = respond(tmp_path, shell_alert(pid))
    assert rec["outcome"] == "done", rec
    assert rec["target"]["interface"] == pod.host_if
    assert not pod.can_connect(host, port), "quarantined pod still reaches the server"
    # and the host cannot reach into the pod either
    probe = socket.socket()
    probe.settimeout(1)
    with pytest.raises(OSError):
        probe.connect((pod.pod_ip, 22))
    probe.close()

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
    pid = pod.start(["sleep", "60"])
    rec = respond(tmp_path, shell_alert(pid), params=f"{{allowed_cidrs: [{host}/32]}}")
    assert rec["outcome"] == "done", rec
    assert pod.reaches(host, port), "the forensics allow-list must stay reachable"
    assert not pod.can_connect("10.213.0.9", port)  # anything else is cut
