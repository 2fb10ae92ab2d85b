"""The kill's guards for containers (podman, real BPF): whatever a policy says, a process
in a protected namespace (kube-system here, by the kubelet's labels) is never killed,
neither by the kernel nor from userspace: the refusal is audited, the process lives.

The rules are narrowed to this test's uniquely named containers (`container.name`)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.system.conftest import podman_run
from tests.system.test_blast_radius import eventually, metric, records, start_agent, stop

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

POLICY = ("- policy: kill-shadow-readers\n"
          "  match: {rules: [Read sensitive file untrusted]}\n"
          "  actions: [{kill: {signal: KILL, in_kernel: true}}]\n"
          "  dry_run: false\n")
# a few records of the shell before the attack: the agent knows the container by then and
# arms the shell again on each
SETTLE = "for s in 1 2 3; do sleep 1; done; "


def rules_for(tmp: Path, *names: str) -> Path:
    rules = tmp / "rules"
    rules.mkdir()
    shutil.copy(REPO / "tests/data/falco-rules/falco_rules.yaml", rules / "falco_rules.yaml")
    (rules / "zz_only_this_test.yaml").write_text(
        "- rule: Read sensitive file untrusted\n"
        f"  condition: and container.name in ({', '.join(names)})\n"
        "  override: {condition: append}\n")
    return rules


def test_a_protected_namespace_is_never_killed_in_the_kernel_or_from_userspace(
        need_root: None, ebpf_ready: None, podman_ready: None, tmp_path: Path,
        enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    """The same attack in a pod of an ordinary namespace dies in the kernel (so the
    kernel does arm containers), and in a kube-system pod is never armed: it reads the
    file and lives, and the userspace kill is refused and audited."""
    tag = uuid.uuid4().hex[:8]
    ordinary, protected = f"br-ordinary-{tag}", f"br-guard-{tag}"
    agent, audit, err, port = start_agent(tmp_path, enforcer_cmd, cli_env,
                                          rules_for(tmp_path, ordinary, protected), POLICY)
    attack = SETTLE + "cat /etc/shadow > /tmp/out; echo $? $(wc -c < /tmp/out); sleep 2; " \
                      "echo alive"
    try:
        killed = podman_run("sh", "-c", f"sh -c '{attack}'", name=ordinary,
                            labels={"io.kubernetes.pod.name": ordinary,
                                    "io.kubernetes.pod.namespace": f"ns-{tag}"})
        assert killed.stdout.splitlines() == ["137 0", "alive"], killed.stderr[-2000:]
        assert metric(port, "enforcer_in_kernel_kills_total") == 1
        done = podman_run("sh", "-c", f"sh -c '{attack}'", name=protected,
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
        attack = (SETTLE + f"i=0; while [ $i -lt {REPEATS} ]; do i=$((i+1)); "
                  "cat /etc/shadow > /tmp/out; s=$?; echo $s $(wc -c < /tmp/out); done")
        done = podman_run("sh", "-c", f"sh -c '{attack}'", name=name)
        lines = done.stdout.splitlines()
        assert len(lines) == REPEATS, done.stderr[-2000:]
        assert {line: lines.count(line) for line in set(lines)} == {"137 0": REPEATS}
        assert metric(port, "enforcer_in_kernel_kills_total") == REPEATS
        lost = metric(port, "enforcer_in_kernel_kill_records_lost_total")
        eventually(lambda: metric(port, "enforcer_actions_total", action="kill",
                                  outcome="killed-in-kernel") + lost >= REPEATS,
                   "the audit never recorded the kernel's kills")
        assert metric(port, "enforcer_policy_suspensions_total") == 0
    finally:
        stop(agent)
    recs = records(audit)
    assert not [r for r in recs if r["kind"] == "breaker" or r["outcome"] == "suspended"]
    assert len([r for r in recs if r["outcome"] == "killed-in-kernel"]) + lost == REPEATS
