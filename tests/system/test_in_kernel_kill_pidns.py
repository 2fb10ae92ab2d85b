"""PID 1 of a pid namespace a host user made is no container's init: killed, in the kernel
and from userspace (real BPF, real processes).

Threat: any user on the host runs `unshare -Urpf cat /etc/shadow` (or, unprivileged, with
a user namespace of their own): the `cat` is PID 1 of a pid namespace right below the
host's, which the guard for a container's PID 1 used to spare, so the attack escaped every
kill. A real container's PID 1 stays spared (tests/system/test_response_snapshot.py and the
podman tests in test_blast_radius_containers.py).

The machine is shared: the rules match only children and grandchildren of this test's
launcher (a copy of python with a unique name) and this test's own marker file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.system.test_blast_radius import (
    eventually,
    launcher_exe,
    metric,
    records,
    shared_dir,  # noqa: F401 - a fixture
    start_agent,
    stop,
)
from tests.system.test_in_kernel_kill import Launcher

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

TRIALS = 20
FORK_KILLED = (1, 0)
USER = 64300  # an unused uid: an ordinary host user

RULES = """
- rule: Read sensitive file untrusted
  condition: and (proc.pname = {launcher} or proc.aname[2] = {launcher})
  override: {{condition: append}}

- rule: PIDNS marker
  desc: a read of this test's marker file
  condition: >
    open_read and fd.name = {marker}
    and (proc.pname = {launcher} or proc.aname[2] = {launcher} or proc.aname[3] = {launcher})
  output: "marker read (user=%user.uid command=%proc.cmdline)"
  priority: WARNING

- rule: PIDNS marker slow
  desc: a read of this test's second marker file
  condition: >
    open_read and fd.name = {slow}
    and (proc.pname = {launcher} or proc.aname[2] = {launcher} or proc.aname[3] = {launcher})
  output: "slow marker read (user=%user.uid command=%proc.cmdline)"
  priority: WARNING
"""

POLICIES = """
- policy: kill-in-kernel
  match: {rules: [Read sensitive file untrusted, PIDNS marker]}
  actions: [{kill: {signal: KILL, in_kernel: true}}]
  dry_run: false
- policy: kill-from-userspace
  match: {rules: [PIDNS marker slow]}
  actions: [{kill: {signal: KILL}}]
  dry_run: false
"""


def kills(audit: Path) -> list[dict]:
    return [r for r in records(audit) if r["kind"] == "action" and r["action"] == "kill"]


def test_pid_1_of_a_host_users_pid_namespace_is_killed_in_the_kernel_and_from_userspace(
        need_root: None, ebpf_ready: None, tmp_path: Path, shared_dir: Path,  # noqa: F811
        enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    exe = launcher_exe(shared_dir)
    marker = shared_dir / "marker"
    slow = shared_dir / "slow-marker"
    for path in (marker, slow):
        path.write_text("secret\n")
        path.chmod(0o644)
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(REPO / "tests/data/falco-rules/falco_rules.yaml", rules / "falco_rules.yaml")
    (rules / "zz_pidns.yaml").write_text(RULES.format(launcher=exe.name, marker=marker,
                                                      slow=slow))
    root = Launcher(exe.parent, exe=exe)
    user = Launcher(exe.parent, USER, exe=exe)
    try:
        agent, audit, err, port = start_agent(tmp_path, enforcer_cmd, cli_env, rules, POLICIES)
        try:
            # root on the host: the cat is PID 1 of its own pid namespace, a grandchild of
            # the launcher (unshare execs in place, forks, the child execs cat)
            as_root = [root.run("unshare", "-Urpf", "cat", "/etc/shadow")
                       for _ in range(TRIALS)]
            # an unprivileged host user, with a user namespace and /proc of their own
            as_user = [user.run("unshare", "-Urpf", "--mount-proc", "cat", str(marker))
                       for _ in range(TRIALS)]
            # from userspace: PID 1 of the user's namespace opens the file, then waits on
            # its stdin (the pipe's writer sleeps 10 s): killed before it ends
            waiting = user.run("sh", "-c", f"sleep 10 | unshare -Urpf cat {slow} - "
                                           "> /dev/null; echo $?")
            # unshare -f exits 1 when its child dies of SIGKILL (it cannot re-raise it);
            # not one byte was read, and the kernel's count below says who killed them
            assert as_root == [FORK_KILLED] * TRIALS, err.read_text()[-3000:]
            assert as_user == [FORK_KILLED] * TRIALS, err.read_text()[-3000:]
            assert waiting == (0, len("1\n")), waiting
            # every one by the kernel: its own count (records may be lost, the count is not)
            eventually(lambda: metric(port, "enforcer_in_kernel_kills_total") >= 2 * TRIALS,
                       "the kernel did not kill them all")
            assert metric(port, "enforcer_in_kernel_kills_total") == 2 * TRIALS
        finally:
            stop(agent)
    finally:
        root.close()
        user.close()
    done = kills(audit)
    assert not [r for r in done if r.get("guard") == "container-init"], done
    slow_kills = [r for r in done if r["rule"] == "PIDNS marker slow"]
    assert [r["outcome"] for r in slow_kills] == ["done"], slow_kills


def test_a_host_users_pid_1_is_no_container_init_for_the_guards(
        need_root: None, tmp_path: Path) -> None:
    """The userspace guard alone: PID 1 of a pid namespace right below the host's, made by
    a host user, is refused only by the guards that hold for every process."""
    from actions.base import Refused
    from enforcer.policy.guards import Guards

    child = subprocess.Popen(["unshare", "-Urpf", "sleep", "60"])
    # the "agent" of these guards: a process of its own (the test runner is the
    # unshare's ancestor, which the agent guard would rightly refuse)
    agent = subprocess.Popen(["sleep", "60"])
    inner = None
    try:
        def pid_1() -> int | None:
            try:
                kids = Path(f"/proc/{child.pid}/task/{child.pid}/children").read_text().split()
            except OSError:
                return None
            return int(kids[0]) if kids else None
        eventually(lambda: pid_1() is not None, "unshare never forked")
        inner = pid_1()
        assert inner is not None
        status = Path(f"/proc/{inner}/status").read_text()
        assert [ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")] == [
            [str(inner), "1"]]
        try:
            Guards(agent_pid=agent.pid).check_process(inner)
        except Refused as exc:  # pragma: no cover - the failure this test exists for
            pytest.fail(f"refused: {exc.guard}: {exc}")
    finally:
        if inner is not None:
            os.kill(inner, signal.SIGKILL)  # PID 1 of its namespace: nothing outlives it
        for proc in (child, agent):
            proc.kill()
            proc.wait()
