"""The in-kernel kill in podman containers (real BPF): every repeat of an attack inside a
container dies in the kernel before it reads a byte; and whatever a policy says, a process
in a protected namespace (kube-system here, by the kubelet's labels) is never killed,
neither by the kernel nor from userspace: the refusal is audited, the process lives.

The rules are narrowed to this test's uniquely named containers (`container.name`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.system.conftest import podman_run
from tests.system.test_blast_radius import (
    assert_kernel_killed,
    eventually,
    metric,
    records,
    start_agent,
    stop,
)

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

POLICY = ("- policy: kill-shadow-readers\n"
          "  match: {rules: [Read sensitive file untrusted]}\n"
          "  actions: [{kill: {signal: KILL, in_kernel: true}}]\n"
          "  dry_run: false\n")

READY_RULE = """
- rule: BR container known {name}
  desc: this test's container, once the agent has its metadata (no policy acts on it)
  condition: open_read and fd.name = /etc/hostname and container.name = {name}
  output: "container known (container=%container.name)"
  priority: NOTICE
"""
# Until the test says go, the container reads /etc/hostname (READY_RULE) and sleeps: each
# sleep is a fork record of the shell, on which the agent arms it again, and the alert tells
# the test that the agent knows the container (its name, so its namespace).
WAIT_FOR_GO = ("while [ ! -e /sync/go ]; do cat /etc/hostname > /dev/null; sleep 0.2; "
               "done; ")


def rules_for(tmp: Path, *names: str) -> Path:
    rules = tmp / "rules"
    rules.mkdir()
    shutil.copy(REPO / "tests/data/falco-rules/falco_rules.yaml", rules / "falco_rules.yaml")
    (rules / "zz_only_this_test.yaml").write_text(
        "- rule: Read sensitive file untrusted\n"
        f"  condition: and container.name in ({', '.join(names)})\n"
        "  override: {condition: append}\n"
        + "".join(READY_RULE.format(name=n) for n in names))
    return rules


def attack_when_known(tmp: Path, name: str, script: str,
                      labels: dict[str, str] | None = None
                      ) -> subprocess.CompletedProcess[str]:
    """Run `script` in a new container named `name` (its shell is not PID 1: the kernel
    never kills a container's PID 1) once the agent started by start_agent(tmp, ...) has
    said it knows the container."""
    # (the agent's arming trace, ENFORCER_TRACE_ARMING, goes to its stderr: see arming_trace)
    sync = tmp / f"sync-{name}"
    sync.mkdir()
    alerts = tmp / "alerts.jsonl"
    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(podman_run, "sh", "-c", f"sh -c '{WAIT_FOR_GO}{script}'",
                           name=name, labels=labels, extra=("-v", f"{sync}:/sync"))
        try:
            eventually(lambda: done.done() or (alerts.exists() and any(
                json.loads(line).get("rule") == f"BR container known {name}"
                for line in alerts.read_text().splitlines() if line.strip())),
                f"the agent never knew the container {name}", timeout=120)
        finally:
            (sync / "go").touch()  # a failed wait must not leave the container waiting
        return done.result()


def arming_trace(tmp: Path) -> str:
    """The agent's arming decisions on container processes (the last 40), for a failure's
    message: why a container's process was or was not armed in the kernel."""
    err = tmp / "agent.err"
    lines = [line for line in err.read_text().splitlines() if "arming:" in line] \
        if err.exists() else []
    return "\n".join(lines[-40:])


def test_a_protected_namespace_is_never_killed_in_the_kernel_or_from_userspace(
        need_root: None, ebpf_ready: None, podman_ready: None, tmp_path: Path,
        enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    """The same attack in a pod of an ordinary namespace dies in the kernel (so the
    kernel does arm containers), and in a kube-system pod is never armed: it reads the
    file and lives, and the userspace kill is refused and audited."""
    tag = uuid.uuid4().hex[:8]
    ordinary, protected = f"br-ordinary-{tag}", f"br-guard-{tag}"
    agent, audit, err, port = start_agent(tmp_path, enforcer_cmd,
                                          {**cli_env, "ENFORCER_TRACE_ARMING": "1"},
                                          rules_for(tmp_path, ordinary, protected), POLICY)
    attack = "cat /etc/shadow > /tmp/out; echo $? $(wc -c < /tmp/out); sleep 2; echo alive"
    try:
        killed = attack_when_known(tmp_path, ordinary, attack,
                                   labels={"io.kubernetes.pod.name": ordinary,
                                           "io.kubernetes.pod.namespace": f"ns-{tag}"})
        assert killed.stdout.splitlines() == ["137 0", "alive"], \
            killed.stderr[-2000:] + arming_trace(tmp_path)
        assert metric(port, "enforcer_in_kernel_kills_total") == 1
        done = attack_when_known(tmp_path, protected, attack,
                                 labels={"io.kubernetes.pod.name": protected,
                                         "io.kubernetes.pod.namespace": "kube-system"})
        lines = done.stdout.splitlines()
        assert len(lines) == 2 and lines[0].startswith("0 ") and lines[0] != "0 0" \
            and lines[1] == "alive", done.stdout + done.stderr[-2000:]
        assert metric(port, "enforcer_in_kernel_kills_total") == 1
    finally:
        stop(agent)
    recs = records(audit)
    in_kernel = [r for r in recs if r["outcome"] == "killed-in-kernel"]
    assert len(in_kernel) <= 1  # the kernel's record of the ordinary pod's kill (may be lost)
    kills = [r for r in recs if r["kind"] == "action" and r["action"] == "kill"
             and r["outcome"] != "killed-in-kernel"]
    guarded = [r for r in kills if r.get("guard") == "protected-namespace"]
    assert guarded and {r["outcome"] for r in guarded} == {"suppressed"}
    assert all("'kube-system' is protected" in r["reason"] for r in guarded)


REPEATS = 1000


def test_1000_repeats_in_one_podman_container_are_each_killed_in_the_kernel(
        need_root: None, ebpf_ready: None, podman_ready: None, tmp_path: Path,
        enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    """Threat: root in one container repeats `cat /etc/shadow` as often as it likes.
    Default settings: each of 1000 repeats dies in the kernel before it reads a byte, no
    policy is suspended, and /metrics counts 1000 kernel kills."""
    name = f"br-repeat-{uuid.uuid4().hex[:8]}"
    agent, audit, err, port = start_agent(tmp_path, enforcer_cmd, cli_env,
                                          rules_for(tmp_path, name), POLICY)
    try:
        # each repeat prints its exit status and the bytes it wrote: a kill before the
        # read is "137 0"
        attack = (f"i=0; while [ $i -lt {REPEATS} ]; do i=$((i+1)); "
                  "cat /etc/shadow > /tmp/out; s=$?; echo $s $(wc -c < /tmp/out); done")
        done = attack_when_known(tmp_path, name, attack)
        lines = done.stdout.splitlines()
        assert len(lines) == REPEATS, done.stderr[-2000:]
        assert {line: lines.count(line) for line in set(lines)} == {"137 0": REPEATS}
        lost = assert_kernel_killed(port, REPEATS)
    finally:
        stop(agent)
    recs = records(audit)
    assert not [r for r in recs if r["kind"] == "breaker" or r["outcome"] == "suspended"]
    assert len([r for r in recs if r["outcome"] == "killed-in-kernel"]) + lost == REPEATS


def test_pid_1_of_a_namespace_the_workload_made_is_not_spared(
        need_root: None, ebpf_ready: None, podman_ready: None, tmp_path: Path,
        enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    """Threat: root in a container makes a pid namespace of its own (podman's defaults allow
    `unshare -Urpf`) so that its process is PID 1 there, which the guard for a container's
    PID 1 used to spare (in the kernel and from userspace). It is killed."""
    name = f"br-nested-{uuid.uuid4().hex[:8]}"
    agent, audit, err, port = start_agent(tmp_path, enforcer_cmd, cli_env,
                                          rules_for(tmp_path, name), POLICY)
    try:
        # cat, PID 1 of its namespace, reads the file, then waits on its stdin (5 s)
        attack = "sleep 5 | unshare -Urpf cat /etc/shadow - > /dev/null; echo done"
        done = attack_when_known(tmp_path, name, attack)
        assert done.stdout.split() == ["done"], done.stdout + done.stderr[-2000:]
    finally:
        stop(agent)
    kills = [r for r in records(audit) if r["kind"] == "action" and r["action"] == "kill"]
    assert not [r for r in kills if r.get("guard") == "container-init"], kills
    # killed in the kernel at the open, or from userspace while it waited on its stdin
    assert {r["outcome"] for r in kills} & {"killed-in-kernel", "done"}, kills
