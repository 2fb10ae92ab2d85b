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
from tests.system.test_blast_radius import metric, records, start_agent, stop

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

POLICY = ("- policy: kill-shadow-readers\n"
          "  match: {rules: [Read sensitive file untrusted]}\n"
          "  actions: [{kill: {signal: KILL, in_kernel: true}}]\n"
          "  dry_run: false\n")
# a few records of the shell before the attack: the agent knows the container by then and
# arms the shell again on each
SETTLE = "for s in 1 2 3; do sleep 1; done; "


def rules_for(tmp: Path, name: str) -> Path:
    rules = tmp / "rules"
    rules.mkdir()
    shutil.copy(REPO / "tests/data/falco-rules/falco_rules.yaml", rules / "falco_rules.yaml")
    (rules / "zz_only_this_test.yaml").write_text(
        "- rule: Read sensitive file untrusted\n"
        f"  condition: and container.name = {name}\n"
        "  override: {condition: append}\n")
    return rules


def test_a_protected_namespace_is_never_killed_in_the_kernel_or_from_userspace(
        need_root: None, ebpf_ready: None, podman_ready: None, tmp_path: Path,
        enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    name = f"br-guard-{uuid.uuid4().hex[:8]}"
    agent, audit, err, port = start_agent(tmp_path, enforcer_cmd, cli_env,
                                          rules_for(tmp_path, name), POLICY)
    try:
        attack = SETTLE + "cat /etc/shadow > /dev/null && echo read-ok; sleep 2; echo alive"
        done = podman_run("sh", "-c", f"sh -c '{attack}'", name=name,
                          labels={"io.kubernetes.pod.name": name,
                                  "io.kubernetes.pod.namespace": "kube-system"})
        assert done.stdout.split() == ["read-ok", "alive"], done.stderr[-2000:]
        assert metric(port, "enforcer_in_kernel_kills_total") == 0
    finally:
        stop(agent)
    kills = [r for r in records(audit) if r["kind"] == "action" and r["action"] == "kill"]
    assert kills, "the userspace kill never answered the match"
    assert {(r["outcome"], r.get("guard")) for r in kills} == {
        ("suppressed", "protected-namespace")}
