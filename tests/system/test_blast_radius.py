"""Enforcement the policed workload cannot switch off, on the live agent with the in-kernel
kill (real BPF, real processes).

Threat: an attacker (any user on the host) repeats an attack as often as they like, from
fresh processes, executable copies and pids. Each repeat is answered, in the kernel, and
nothing they do suspends a policy or disarms the kernel. A policy gone wrong (a rule that
matches in workload after workload) is suspended at its blast radius for NEW workloads only:
those it already answered are still killed, in the kernel too, another policy keeps killing,
and it comes back after its cool-off (half-open) or by `enforcer policies resume`.

The machine is shared: the agent acts only on this test's processes, children of launchers
(copies of python with a unique name, started before the agent so that it knows them), and
the blast-radius rules only on the test's own marker files."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.system.test_in_kernel_kill import Launcher

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

REPEATS = 1000
KILLED = (-signal.SIGKILL, 0)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the test's other users can read (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="enf-br-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def launcher_exe(where: Path) -> Path:
    exe = where / ("br" + uuid.uuid4().hex[:8])
    shutil.copy(Path(sys.executable).resolve(), exe)
    exe.chmod(0o755)
    return exe


def start_agent(tmp: Path, cmd: list[str], env: dict[str, str], rules: Path, policies: str,
                *extra: str) -> tuple[subprocess.Popen[bytes], Path, Path, int]:
    """The live agent with these rules and policies, once ready: (process, audit log,
    stderr file, HTTP port). Its state (control socket) is in `tmp`."""
    policy = tmp / "policies.yaml"
    policy.write_text(policies)
    audit = tmp / "audit.jsonl"
    err_path = tmp / "agent.err"
    with err_path.open("w") as err:
        agent = subprocess.Popen(
            cmd + ["--rules", str(rules), "--policies", str(policy), "--audit-log", str(audit),
                   "--http-addr", "127.0.0.1:0", "--state-dir", str(tmp / "state"),
                   "--snapshot-dir", str(tmp / "snapshots"),
                   "--control-socket", str(tmp / "control.sock"),
                   "--output-file", str(tmp / "alerts.jsonl"), "--format", "json", *extra],
            stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline = time.monotonic() + 120
    while "enforcer: ready" not in err_path.read_text():
        assert agent.poll() is None, err_path.read_text()
        assert time.monotonic() < deadline, "the agent never became ready"
        time.sleep(0.1)
    port = int(re.search(r"http on port (\d+)", err_path.read_text()).group(1))
    return agent, audit, err_path, port


def stop(agent: subprocess.Popen[bytes]) -> None:
    agent.send_signal(signal.SIGTERM)
    try:
        agent.wait(timeout=30)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()


def records(audit: Path) -> list[dict]:
    return [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]


def metric(port: int, name: str, **labels: str) -> float:
    """The sum of a Prometheus sample over the series with these labels."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    total = 0.0
    for line in text.decode().splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def eventually(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def assert_kernel_killed(port: int, n: int) -> float:
    """The kernel's own count of its kills is exactly n, the audit recorded them (it loses
    none unless the kernel says it lost kill records), and no breaker tripped; returns the
    kill records the kernel lost."""
    assert metric(port, "enforcer_in_kernel_kills_total") == n
    lost = metric(port, "enforcer_in_kernel_kill_records_lost_total")
    eventually(lambda: metric(port, "enforcer_actions_total", action="kill",
                              outcome="killed-in-kernel") + lost >= n,
               "the audit never recorded the kernel's kills")
    assert metric(port, "enforcer_policy_suspensions_total") == 0
    return lost


def test_1000_repeats_from_one_host_workload_are_each_killed_in_the_kernel(
        need_root: None, ebpf_ready: None, tmp_path: Path, shared_dir: Path,
        enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    """Default settings: no budget, no breaker trips on repeats; the kernel kills every
    one of 1000 `cat /etc/shadow` before it reads a byte, and /metrics counts 1000 kills."""
    exe = launcher_exe(shared_dir)
    launcher = Launcher(exe.parent, exe=exe)
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(REPO / "tests/data/falco-rules/falco_rules.yaml", rules / "falco_rules.yaml")
    (rules / "zz_only_this_test.yaml").write_text(
        "- rule: Read sensitive file untrusted\n"
        f"  condition: and (proc.pname = {exe.name} or proc.aname[2] = {exe.name})\n"
        "  override: {condition: append}\n")
    policies = ("- policy: kill-shadow-readers\n"
                "  match: {rules: [Read sensitive file untrusted]}\n"
                "  actions: [{kill: {signal: KILL, in_kernel: true}}]\n"
                "  dry_run: false\n")
    try:
        agent, audit, err, port = start_agent(tmp_path, enforcer_cmd, cli_env, rules, policies)
        try:
            results = [launcher.run("cat", "/etc/shadow") for _ in range(REPEATS)]
            assert results == [KILLED] * REPEATS
            lost = assert_kernel_killed(port, REPEATS)
            status = subprocess.run(
                enforcer_cmd + ["policies", "status", "--control-socket",
                                str(tmp_path / "control.sock")],
                capture_output=True, text=True, env=cli_env, timeout=30)
            assert status.returncode == 0, status.stderr
            (state,) = [json.loads(line) for line in status.stdout.splitlines()]
            assert state["state"] == "closed" and state["answered_workloads"] == 1
        finally:
            stop(agent)
    finally:
        launcher.close()
    recs = records(audit)
    assert not [r for r in recs if r["kind"] == "breaker" or r["outcome"] == "suspended"]
    assert len([r for r in recs if r["outcome"] == "killed-in-kernel"]) + lost == REPEATS
    # the userspace backstop says what happened: the kernel did it
    backstop = {r["outcome"] for r in recs if r["kind"] == "action"
                and r["outcome"] != "killed-in-kernel"}
    assert backstop <= {"done-in-kernel"}, backstop


MARKER_RULES = """
- rule: BR marker {tag}
  desc: a read of this test's marker file {tag}
  condition: open_read and fd.name = {path} and proc.pname = {launcher}
  output: "marker {tag} read (user=%user.uid command=%proc.cmdline)"
  priority: WARNING
"""

BR_POLICIES = """
- policy: wrong-policy
  match: {{rules: [BR marker a]}}
  actions: [{{kill: {{signal: KILL, in_kernel: true}}}}]
  dry_run: false
  breaker: {{workloads: 3, cooloff: {cooloff}}}
- policy: other-policy
  match: {{rules: [BR marker b]}}
  actions: [{{kill: {{signal: KILL, in_kernel: true}}}}]
  dry_run: false
"""

FIRST_UID = 64100  # unused uids: distinct host users are distinct workloads


def test_blast_radius_suspends_a_policy_for_new_workloads_only(
        need_root: None, ebpf_ready: None, tmp_path: Path, shared_dir: Path,
        enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    exe = launcher_exe(shared_dir)
    markers = {}
    for tag in ("a", "b"):
        markers[tag] = shared_dir / f"marker-{tag}"
        markers[tag].write_text("secret\n")
        markers[tag].chmod(0o644)
    size = len("secret\n")
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(REPO / "tests/data/falco-rules/falco_rules.yaml", rules / "falco_rules.yaml")
    (rules / "zz_markers.yaml").write_text("".join(
        MARKER_RULES.format(tag=tag, path=path, launcher=exe.name)
        for tag, path in markers.items()))
    cooloff = 8
    users = {n: Launcher(exe.parent, FIRST_UID + n, exe=exe) for n in range(1, 9)}
    socket = str(tmp_path / "control.sock")

    def read(n: int, tag: str = "a", cat: str = "cat") -> tuple[int, int]:
        return users[n].run(cat, str(markers[tag]))

    def status() -> dict:
        out = subprocess.run(enforcer_cmd + ["policies", "status", "--control-socket", socket],
                             capture_output=True, text=True, env=cli_env, timeout=30)
        assert out.returncode == 0, out.stderr
        states = {s["policy"]: s for s in map(json.loads, out.stdout.splitlines())}
        return states.get("wrong-policy", {})

    def state() -> str:
        return status().get("state", "none")

    try:
        agent, audit, err, port = start_agent(
            tmp_path, enforcer_cmd, cli_env, rules,
            BR_POLICIES.format(cooloff=f"{cooloff}s"))
        try:
            # one user, many pids and executable copies: one workload, never a trip
            copies = []
            for i in range(5):
                copy = shared_dir / f"reader{i}"
                shutil.copy("/usr/bin/cat", copy)
                copies.append(str(copy))
            assert [read(1, cat=c) for c in copies] == [KILLED] * 5
            assert [read(1) for _ in range(20)] == [KILLED] * 20
            # two more users: the limit (3) is reached, not passed
            assert [read(2), read(3)] == [KILLED, KILLED]
            eventually(lambda: sum(1 for r in records(audit) if r["kind"] == "decision"
                                   and r["outcome"] == "act") >= 27,
                       "the responder never answered the first three workloads")
            assert state() == "closed"
            # a fourth user: over the blast radius, suspended for it (it reads the file)
            assert read(4) == (0, size)
            eventually(lambda: state() == "suspended", "the policy was never suspended")
            assert read(5) == (0, size)
            # those already answered are still killed, in the kernel
            assert [read(1), read(2), read(3)] == [KILLED] * 3
            # another policy keeps killing, the suspended policy's new workloads included
            assert read(4, "b") == KILLED
            assert metric(port, "enforcer_policy_suspensions_total",
                          policy="wrong-policy") == 1
            # cool-off over: half-open, one new workload is a trial, a second re-suspends
            time.sleep(cooloff + 1)
            # the kernel arms by the new state on the agent's next poll: wait for it (on a
            # busy box a read straight after the cool-off raced it)
            eventually(lambda: (s := status()).get("state") == "half-open"
                       and s.get("kernel_in_sync") is True,
                       "the kernel never caught up with the half-open state")
            assert read(6) == KILLED
            eventually(lambda: state() == "half-open", "not half-open after the trial")
            assert read(7) == (0, size)
            eventually(lambda: state() == "suspended", "the second new workload did not "
                                                       "suspend it again")
            # by command
            resumed = subprocess.run(enforcer_cmd + ["policies", "resume", "wrong-policy",
                                                     "--control-socket", socket],
                                     capture_output=True, text=True, env=cli_env, timeout=30)
            assert resumed.returncode == 0, resumed.stderr
            # (suspended, or half-open if the cool-off has passed again meanwhile)
            assert "wrong-policy resumed (was " in resumed.stdout
            eventually(lambda: state() == "closed", "not closed after the resume")
            # closed and counting afresh: three new workloads again, not a single trial
            assert [read(8), read(5), read(4)] == [KILLED] * 3
        finally:
            stop(agent)
    finally:
        for launcher in users.values():
            launcher.close()
    recs = records(audit)
    tripped = [r for r in recs if r["kind"] == "breaker" and r["outcome"] == "tripped"]
    assert [r["policy"] for r in tripped] == ["wrong-policy", "wrong-policy"]
    assert "user:64104" in tripped[0]["reason"]
    assert [r for r in recs if r["kind"] == "breaker" and r["outcome"] == "resumed"]
    refused = {tuple(r["detail"]["workload"]) for r in recs if r["outcome"] == "suspended"}
    assert refused == {("user:64104",), ("user:64105",), ("user:64107",)}
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()
              if line.strip()]
    suspended = [a for a in alerts if a["rule"] == "Enforcer policy suspended"]
    assert len(suspended) == 2 and {a["priority"] for a in suspended} == {"Critical"}
