"""The in-kernel kill, end to end on the live agent: `kill: {in_kernel: true}` on the upstream
"Read sensitive file untrusted" rule makes the BPF program SIGKILL `cat /etc/shadow` before
it reads a byte, every time; the rule's trusted programs and a near-miss path are untouched;
a dry run never kills.

The machine is shared: so that the agent acts only on this test's processes, the rule is
narrowed with a Falco `append` to children and grandchildren of this test's launcher (a
copy of python with its own name, started before the agent so the agent knows it). The
victims are fresh processes, started after the agent is ready."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

TRIALS = 100
SHELL_TRIALS = 20
LAUNCHER = """
import json, subprocess, sys
for line in sys.stdin:
    argv = json.loads(line)
    done = subprocess.run(argv, capture_output=True)
    print(json.dumps([done.returncode, len(done.stdout)]), flush=True)
"""


class Launcher:
    """A long-lived parent with a unique name that runs one command per request: a copy
    of python made in `tmp`, or the given `exe` (one copy shared by several launchers), run
    as `uid` (in the copy's directory, which that user can enter)."""

    def __init__(self, tmp: Path, uid: int | None = None, exe: Path | None = None):
        if exe is None:
            exe = tmp / ("ik" + uuid.uuid4().hex[:8])
            shutil.copy(Path(sys.executable).resolve(), exe)
        self.name = exe.name
        self.proc = subprocess.Popen([str(exe), "-c", LAUNCHER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, user=uid,
                                     cwd=exe.parent if uid is not None else None)

    def run(self, *argv: str) -> tuple[int, int]:
        """(return code, bytes on stdout) of a fresh process running argv."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(list(argv)) + "\n")
        self.proc.stdin.flush()
        code, size = json.loads(self.proc.stdout.readline())
        return code, size

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    lau = Launcher(tmp_path)
    yield lau
    lau.close()


def start_agent(tmp: Path, launcher: Launcher, cmd: list[str], env: dict[str, str],
                *extra: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    rules = tmp / "rules"
    rules.mkdir(exist_ok=True)
    shutil.copy(REPO / "tests/data/falco-rules/falco_rules.yaml", rules / "falco_rules.yaml")
    (rules / "zz_only_this_test.yaml").write_text(
        "- rule: Read sensitive file untrusted\n"
        f"  condition: and (proc.pname = {launcher.name} or proc.aname[2] = {launcher.name})\n"
        "  override: {condition: append}\n")
    return run_kill_agent(tmp, cmd, env, rules, "Read sensitive file untrusted", *extra)


def run_kill_agent(tmp: Path, cmd: list[str], env: dict[str, str], rules: Path, rule: str,
                   *extra: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """The agent with these rules and a policy killing `rule`'s matches in the kernel,
    once ready: (process, audit log, stderr file)."""
    policy = tmp / "kill.yaml"
    policy.write_text("- policy: kill-in-kernel\n"
                      f"  match: {{rules: [{rule}]}}\n"
                      "  actions: [{kill: {signal: KILL, in_kernel: true}}]\n"
                      "  dry_run: false\n")
    audit = tmp / "audit.jsonl"
    err_path = tmp / "agent.err"
    err = err_path.open("w")
    agent = subprocess.Popen(cmd + ["--rules", str(rules), "--policies", str(policy),
                                    "--audit-log", str(audit),
                                    # any free port: other agents on the machine use 9376
                                    "--http-addr", "127.0.0.1:0", *extra],
                             stdout=subprocess.DEVNULL, stderr=err, env=env)
    err.close()
    deadline = time.monotonic() + 120
    while "enforcer: ready" not in err_path.read_text():  # not "already in use"
        assert agent.poll() is None, err_path.read_text()
        assert time.monotonic() < deadline, "the agent never became ready"
        time.sleep(0.1)
    return agent, audit, err_path


def stop(agent: subprocess.Popen[bytes]) -> None:
    agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(timeout=20)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()


def audit_records(audit: Path, outcome: str) -> list[dict]:
    """The audit records with this outcome, of the lines written in full so far (all of
    them once the agent has stopped)."""
    lines = audit.read_text().split("\n")[:-1] if audit.exists() else []
    return [r for r in map(json.loads, lines) if r["outcome"] == outcome]


def test_cat_of_shadow_reads_nothing_in_100_trials(need_root: None, ebpf_ready: None,
                                                   tmp_path: Path, launcher: Launcher,
                                                   enforcer_cmd: list[str],
                                                   cli_env: dict[str, str]) -> None:
    # default settings: repeats from one workload never trip the blast-radius breaker
    agent, audit, err = start_agent(tmp_path, launcher, enforcer_cmd, cli_env)
    try:
        assert "in-kernel kill armed for 1 rules" in err.read_text()
        results = [launcher.run("cat", "/etc/shadow") for _ in range(TRIALS)]
        assert results == [(-signal.SIGKILL, 0)] * TRIALS
        # through a fresh shell too: the shell is armed with a template for its children
        # at its own exec, before userspace has heard of it
        piped = [launcher.run("sh", "-c", "cat /etc/shadow; true") for _ in range(SHELL_TRIALS)]
        assert piped == [(0, 0)] * SHELL_TRIALS
        # a trusted program the rule excepts (a cat named sshd), and a near-miss path
        trusted = tmp_path / "sshd"
        shutil.copy("/usr/bin/cat", trusted)
        shadow_size = Path("/etc/shadow").stat().st_size
        assert launcher.run(str(trusted), "/etc/shadow") == (0, shadow_size)
        hostname_size = Path("/etc/hostname").stat().st_size
        assert launcher.run("cat", "/etc/hostname") == (0, hostname_size)
        # a relative path is userspace's to judge (it resolves it): never killed by the
        # kernel — the count of kernel kills below stays TRIALS — though the userspace kill
        # may still catch it
        launcher.run("sh", "-c", "cd /etc && exec cat shadow")
    finally:
        stop(agent)
    kills = audit_records(audit, "killed-in-kernel")
    assert len(kills) == TRIALS + SHELL_TRIALS
    assert {(k["rule"], k["detail"]["path"]) for k in kills} == {
        ("Read sensitive file untrusted", "/etc/shadow")}
    # the userspace backstop of each: the kernel's kill, by the kernel's own record of whom
    # it killed; the relative-path cat, which the kernel never killed, is not claimed for it
    # (it was, when the backstop took any process already gone for the kernel's kill). A
    # backstop may also come first ("done": the task was preempted between the program that
    # reported the open and the one that kills), never "noop" for a process the kernel killed.
    backstops = [r for r in map(json.loads, audit.read_text().splitlines())
                 if r["kind"] == "action" and r["outcome"] != "killed-in-kernel"]
    assert len(backstops) == TRIALS + SHELL_TRIALS + 1, backstops[-3:]
    killed = {k["target"]["pid"] for k in kills}
    outcome = {r["target"]["pid"]: r["outcome"] for r in backstops}
    assert {pid: outcome.get(pid) for pid in killed
            if outcome.get(pid) not in ("done-in-kernel", "done")} == {}
    (relative,) = [r for r in backstops if r["target"]["pid"] not in killed]
    assert relative["outcome"] in ("done", "noop"), relative


def test_dry_run_never_kills_in_the_kernel(need_root: None, ebpf_ready: None, tmp_path: Path,
                                           launcher: Launcher, enforcer_cmd: list[str],
                                           cli_env: dict[str, str]) -> None:
    agent, audit, err = start_agent(tmp_path, launcher, enforcer_cmd, cli_env, "--dry-run")
    try:
        assert "in-kernel kill armed" not in err.read_text()
        shadow_size = Path("/etc/shadow").stat().st_size
        for _ in range(5):
            assert launcher.run("cat", "/etc/shadow") == (0, shadow_size)
        deadline = time.monotonic() + 30  # the alerts reach the responder
        while len(audit_records(audit, "dry-run")) < 5:
            assert time.monotonic() < deadline, audit_records(audit, "dry-run")
            time.sleep(0.05)
    finally:
        stop(agent)
    would = audit_records(audit, "dry-run")
    assert len(would) == 5  # and no more once the agent has drained
    assert all("in the kernel" in (r.get("message") or "") for r in would)
