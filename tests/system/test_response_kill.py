"""The kill response on real processes, as root: SIGKILL through a pidfd, never a reused
pid, never a guarded process (protected namespaces too), and the blast-radius breaker that
suspends a policy for new workloads while it keeps killing in those it answered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.process import TICK_NS, boot_epoch_ns, read_stat
from enforcer.alert import Alert
from enforcer.audit.jsonl import JsonlAudit, read_audit
from enforcer.policy.blast_radius import BlastRadius, BreakerLimits
from enforcer.policy.loader import load_policies
from enforcer.priority import Priority
from enforcer.respond.responder import Responder
from tests.conftest import REPO
from tests.system.victims import SHADOW_READER, Victim, spawn

pytestmark = [pytest.mark.root]


@pytest.fixture
def victims() -> Iterator[list[Victim]]:
    started: list[Victim] = []
    yield started
    for victim in started:
        victim.cleanup()

KILL_POLICY = """
- policy: kill-shadow-readers
  match: {rules: [Read sensitive file untrusted], priority: ">=warning"}
  actions:
    - kill: {signal: KILL}
  dry_run: %s
"""


def shadow_alert(pid: int, **start: Any) -> Alert:
    event = {"evt.type": "openat", "evt.rawtime": time.time_ns(), "fd.name": "/etc/shadow",
             "proc.pid": pid, "proc.name": "python3"} | start
    return Alert(rule="Read sensitive file untrusted", priority=Priority.WARNING,
                 output=f"Sensitive file opened for reading by non-trusted program "
                        f"(file=/etc/shadow pid={pid})",
                 output_fields={"fd.name": "/etc/shadow", "proc.pid": pid},
                 time_ns=event["evt.rawtime"], tags=("filesystem", "mitre_credential_access"),
                 event=event)


def respond(tmp_path: Path, alerts: list[Alert], dry_run: str = "false",
            audit_name: str = "audit.jsonl", **kwargs: Any) -> list[dict[str, Any]]:
    path = tmp_path / "policy.yaml"
    path.write_text(KILL_POLICY % dry_run)
    audit_path = tmp_path / audit_name
    audit = JsonlAudit(audit_path)
    responder = Responder(load_policies([path]), audit, node_name="node-a", **kwargs).start()
    for a in alerts:
        responder.submit(a)
    responder.drain()
    responder.stop()
    audit.close()
    return [r for r in read_audit(audit_path) if r["kind"] == "action"]


def test_a_shadow_reader_is_killed_by_sigkill(need_root: None, tmp_path: Path,
                                              victims: list) -> None:
    victim = spawn(SHADOW_READER, tmp_path)
    victims.append(victim)
    (rec,) = respond(tmp_path, [shadow_alert(victim.pid, **{
        "proc.start_ticks": victim.start_ticks})])
    assert rec["outcome"] == "done", rec
    assert victim.exit_code() == -signal.SIGKILL
    assert rec["render"]["signal"] == "SIGKILL"
    assert rec["render"]["syscall"] == "pidfd_send_signal"
    assert rec["target"]["pid"] == victim.pid


def test_falco_epoch_start_time_identifies_the_process(need_root: None, tmp_path: Path,
                                                       victims: list) -> None:
    victim = spawn(SHADOW_READER, tmp_path)
    victims.append(victim)
    epoch = boot_epoch_ns() + victim.start_ticks * TICK_NS
    (rec,) = respond(tmp_path, [shadow_alert(victim.pid, **{"proc.pid.ts": epoch})])
    assert rec["outcome"] == "done", rec
    assert victim.exit_code() == -signal.SIGKILL


def test_a_reused_pid_is_not_killed(need_root: None, tmp_path: Path, victims: list) -> None:
    """The event saw a process that started earlier than the one now holding its pid."""
    victim = spawn(SHADOW_READER, tmp_path)
    victims.append(victim)
    stale = victim.start_ticks - 500
    (rec,) = respond(tmp_path, [shadow_alert(victim.pid, **{"proc.start_ticks": stale})])
    assert rec["outcome"] == "suppressed" and rec["guard"] == "identity", rec
    assert "now belongs to another process" in rec["reason"]
    time.sleep(0.2)
    assert victim.alive()
    # and with Falco's epoch form, 1 s off is another process too
    epoch = boot_epoch_ns() + victim.start_ticks * TICK_NS - 1_000_000_000
    (rec,) = respond(tmp_path, [shadow_alert(victim.pid, **{"proc.pid.ts": epoch})],
                     audit_name="audit2.jsonl")
    assert rec["outcome"] == "suppressed", rec
    assert victim.alive()


def test_without_a_start_time_the_kill_is_skipped(need_root: None, tmp_path: Path,
                                                  victims: list) -> None:
    victim = spawn(SHADOW_READER, tmp_path)
    victims.append(victim)
    (rec,) = respond(tmp_path, [shadow_alert(victim.pid)])
    assert rec["outcome"] == "skipped" and "start time" in rec["reason"]
    assert victim.alive()


def test_dry_run_renders_the_signal_and_kills_nothing(need_root: None, tmp_path: Path,
                                                      victims: list) -> None:
    victim = spawn(SHADOW_READER, tmp_path)
    victims.append(victim)
    (rec,) = respond(tmp_path, [shadow_alert(victim.pid, **{
        "proc.start_ticks": victim.start_ticks})], dry_run="true")
    assert rec["outcome"] == "dry-run" and rec["dry_run"] is True
    assert rec["message"].startswith(f"would send SIGKILL to pid {victim.pid}")
    assert rec["detail"]["would_signal"][0]["pid"] == victim.pid
    assert victim.alive()


# Run as PID 1 of a PID namespace of its own: the responder there sees this script as init,
# and the "agent" is a process tree of the script's own (parent sh -> agent sh -> sleep),
# so that a guard that fails signals only these mimics, never the host's init or the test
# runner's parents.
GUARDED_TREE = """
import json, os, subprocess, sys, time
from pathlib import Path
from actions.process import read_stat
from enforcer.policy.guards import Guards
from tests.system.test_response_kill import respond, shadow_alert

assert os.getpid() == 1, "not PID 1 of a namespace of its own"
tmp = Path(sys.argv[1])
# pid 2 and its children look like kthreadd's to the guards: a placeholder takes it
placeholder = subprocess.Popen(["sleep", "60"])
assert placeholder.pid == 2, placeholder.pid
parent = subprocess.Popen(["sh", "-c", "sh -c 'sleep 60 & wait' & wait"])
def children(pid):
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
deadline = time.monotonic() + 10
while not (children(parent.pid) and children(children(parent.pid)[0])):
    assert time.monotonic() < deadline, "the mimic tree never formed"
    time.sleep(0.01)
agent = children(parent.pid)[0]
child = children(agent)[0]
tree = {"parent": parent.pid, "agent": agent, "child": child}
targets = [1, parent.pid, agent, child]
alerts = [shadow_alert(pid, **{"proc.start_ticks": read_stat(pid).start_ticks})
          for pid in targets]
records = respond(tmp, alerts, guards=Guards(agent_pid=agent))
alive = {name: (read_stat(pid) is not None and read_stat(pid).state != "Z")
         for name, pid in tree.items()}
print(json.dumps({"guards": [[r["outcome"], r.get("guard")] for r in records],
                  "alive": alive}))
parent.kill()
placeholder.kill()
"""


def test_guards_spare_init_kernel_threads_and_the_agents_tree(need_root: None,
                                                              tmp_path: Path) -> None:
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
                           GUARDED_TREE, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, check=False, cwd=REPO,
                          env=os.environ | {"PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["guards"] == [["suppressed", "pid1"]] + [["suppressed", "agent"]] * 3
    assert seen["alive"] == {"parent": True, "agent": True, "child": True}
    # a kernel thread (kthreadd) is the host's own, but ignores every signal anyway
    (rec,) = respond(tmp_path, [shadow_alert(2, **{"proc.start_ticks": read_stat(2).start_ticks})],
                     audit_name="kthread.jsonl")
    assert (rec["outcome"], rec["guard"]) == ("suppressed", "kernel-thread")


def test_the_breaker_suspends_new_workloads_and_keeps_killing_answered_ones(
        need_root: None, tmp_path: Path, victims: list) -> None:
    for i in range(6):
        victims.append(spawn([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path,
                             name=f"v{i}"))
    critical: list[Alert] = []
    # victims 0-3 are four host users; 4 and 5 are more processes of the first user
    uids = [64200, 64201, 64202, 64203, 64200, 64200]
    alerts = [shadow_alert(v.pid, **{"proc.start_ticks": v.start_ticks, "user.uid": uid,
                                     "container.id": "host"})
              for v, uid in zip(victims, uids, strict=True)]
    records = respond(tmp_path, alerts, blast_radius=BlastRadius(BreakerLimits(2, 60, 600)),
                      on_critical=critical.append)
    assert [r["outcome"] for r in records] == ["done"] * 4
    assert [v.exit_code() for v in (victims[0], victims[1], victims[4], victims[5])] == [
        -signal.SIGKILL] * 4
    assert victims[2].alive() and victims[3].alive()
    (alert,) = critical
    assert alert.priority == Priority.CRITICAL and "suspended for new workloads" in alert.output
    audit = list(read_audit(tmp_path / "audit.jsonl"))
    assert len([r for r in audit if r["kind"] == "breaker"]) == 1
    assert [r["detail"]["workload"] for r in audit if r["outcome"] == "suspended"] == [
        ["user:64202"], ["user:64203"]]


def test_a_process_in_a_protected_namespace_is_never_killed(need_root: None, tmp_path: Path,
                                                            victims: list) -> None:
    victim = spawn([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path)
    victims.append(victim)
    start = {"proc.start_ticks": victim.start_ticks}
    alerts = [shadow_alert(victim.pid, **start, **{"k8s.ns.name": "kube-system",
                                                  "k8s.pod.name": "coredns-1"}),
              # a pod whose namespace is not known yet: not acted on either
              shadow_alert(victim.pid, **start, **{"k8s.pod.name": "coredns-1"})]
    records = respond(tmp_path, alerts)
    assert [(r["outcome"], r["guard"]) for r in records] == [
        ("suppressed", "protected-namespace"), ("suppressed", "unknown-namespace")]
    assert victim.alive()


def test_process_group_scope_kills_the_group(need_root: None, tmp_path: Path,
                                             victims: list) -> None:
    leader = spawn(["/bin/sh", "-c", "sleep 60 & sleep 60 & wait"], tmp_path)
    victims.append(leader)
    deadline = time.monotonic() + 5
    while len(Path(f"/proc/{leader.pid}/task/{leader.pid}/children").read_text().split()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    children = [int(c) for c in
                Path(f"/proc/{leader.pid}/task/{leader.pid}/children").read_text().split()]
    path = tmp_path / "policy.yaml"
    path.write_text("- policy: g\n  match: {rules: [Read sensitive file untrusted]}\n"
                    "  actions: [{kill: {scope: process_group}}]\n  dry_run: false\n")
    audit_path = tmp_path / "group.jsonl"
    responder = Responder(load_policies([path]), JsonlAudit(audit_path)).start()
    responder.submit(shadow_alert(leader.pid, **{"proc.start_ticks": leader.start_ticks}))
    responder.drain()
    responder.stop()
    (rec,) = [r for r in read_audit(audit_path) if r["kind"] == "action"]
    assert rec["outcome"] == "done", rec
    assert sorted(s["pid"] for s in rec["detail"]["signalled"]) == sorted([leader.pid]
                                                                          + children)
    assert leader.exit_code() == -signal.SIGKILL
