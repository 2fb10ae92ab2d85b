"""`enforcer test`: policy test cases through the real engine and responder, in dry-run."""

from __future__ import annotations

import json
import re

import yaml

from tests.unit.clirun import run_cli
from tests.unit.gitops.conftest import EXAMPLE, edit

SHELL = {"evt.type": "execve", "evt.dir": "<", "evt.res": "SUCCESS", "proc.name": "bash",
         "proc.exepath": "/usr/bin/bash", "proc.cmdline": "bash", "proc.pname": "runc",
         "proc.aname": ["runc", "containerd-shim", "systemd"], "proc.tty": 34816,
         "user.name": "root", "user.uid": 0, "container.id": "7f3b2c1d9a8e",
         "container.name": "checkout",
         "container.image.repository": "registry.example.internal/shop/checkout",
         "k8s.ns.name": "payments", "k8s.pod.name": "checkout-0"}


def test_example_repository_passes():
    res = run_cli("test", EXAMPLE)
    assert res.code == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[-1] == "6 passed, 0 failed"
    assert all(line.startswith("PASS ") for line in lines[:-1])
    assert re.match(rf"PASS {re.escape(str(EXAMPLE))}/tests/contain-shell.yaml:\d+: kubectl "
                    "exec into a production pod is contained$", lines[0])


def test_policy_pointing_at_a_renamed_rule_fails_before_any_case(repo):
    edit(repo / "rules/local_rules.yaml", "- rule: Package manager run in production pod",
         "- rule: Package manager started in production pod")
    res = run_cli("test", repo)
    assert res.code == 1
    assert f"{repo / 'policies/contain.yaml'}:" in res.stdout
    assert "no rule named 'Package manager run in production pod' is loaded" in res.stdout
    assert res.stdout.splitlines()[-1] == "0 passed, 1 failed"
    assert "do not load" in res.stderr


def test_case_expecting_the_wrong_action_fails_with_expected_and_got(repo):
    tests = repo / "tests/contain-shell.yaml"
    line = edit(tests, "        - {policy: contain-shell-in-production, action: networkpolicy}",
                "        - {policy: contain-shell-in-production, action: quarantine}")
    res = run_cli("test", repo)
    assert res.code == 1
    lines = res.stdout.splitlines()
    assert lines[-1] == "5 passed, 1 failed"
    fail = lines.index(next(x for x in lines if x.startswith("FAIL ")))
    assert re.match(rf"FAIL {re.escape(str(tests))}:\d+: kubectl exec into a production pod "
                    "is contained$", lines[fail])
    case_line = int(lines[fail].split(":")[1])
    assert case_line < line
    detail = "\n".join(lines[fail + 1:fail + 9])
    assert "expected:\n      1. contain-shell-in-production/snapshot planned\n" \
           "      2. contain-shell-in-production/quarantine planned" in detail
    assert "got:\n      1. contain-shell-in-production/snapshot planned {pid: 77120, " \
           "container: 7f3b2c1d9a8e}\n      2. contain-shell-in-production/networkpolicy " \
           "planned {namespace: payments, pod: checkout-5c4d8f7b9-lq2mz}" in detail


def test_exception_removed_breaks_the_silence_case(repo):
    edit(repo / "rules/local_rules.yaml",
         "(container.image.repository = registry.example.internal/platform/debug)",
         "(container.image.repository = registry.example.internal/platform/debugger)")
    res = run_cli("test", repo)
    assert res.code == 1
    assert "FAIL" in res.stdout and "the break-glass debug image may open shells" in res.stdout
    assert "expected silence, got:\n      1. alert Terminal shell in container\n" \
           "      2. contain-shell-in-production/snapshot planned" in res.stdout


def test_wrong_target_or_params_fail(repo):
    tests = repo / "tests/package-manager.yaml"
    edit(tests, "target: {pid: 81234}, params: {signal: KILL}",
         "target: {pid: 81234}, params: {signal: TERM}")
    res = run_cli("test", repo)
    assert res.code == 1 and "params {signal: TERM}" in res.stdout
    edit(tests, "params: {signal: TERM}", "params: {signal: SIGKILL}")
    assert run_cli("test", repo).code == 0
    edit(tests, "target: {pid: 81234}", "target: {pid: 4}")
    assert run_cli("test", repo).code == 1


def _case_file(repo, cases) -> None:
    (repo / "tests").mkdir(exist_ok=True)
    for old in (repo / "tests").glob("*.yaml"):
        old.unlink()
    (repo / "tests/extra.yaml").write_text(yaml.safe_dump({"cases": cases}, sort_keys=False))


def test_events_from_jsonl_rate_limit_and_guards(repo):
    burst = [dict(SHELL, **{"proc.pid": 100 + i, "k8s.pod.name": f"checkout-{i}"})
             for i in range(3)]
    (repo / "tests").mkdir(exist_ok=True)
    (repo / "tests/burst.jsonl").write_text("".join(json.dumps(e) + "\n" for e in burst))
    contained = ["snapshot", "networkpolicy", "delete_pod"]
    steps = [{"policy": "contain-shell-in-production", "action": a}
             for _ in range(2) for a in contained]
    steps.append({"policy": "contain-shell-in-production", "outcome": "rate-limited"})
    protected = dict(SHELL, **{"proc.pid": 7, "k8s.ns.name": "prod"})
    _case_file(repo, [
        {"name": "burst: two contained, the third rate-limited", "events": "burst.jsonl",
         "expect": {"rules": ["Terminal shell in container"] * 3, "actions": steps}},
        {"name": "a protected namespace is never touched", "events": [protected],
         "expect": {"actions": [
             {"policy": "contain-shell-in-production", "action": "snapshot"},
             {"policy": "contain-shell-in-production", "action": "networkpolicy",
              "outcome": "suppressed"},
             {"policy": "contain-shell-in-production", "action": "delete_pod",
              "outcome": "suppressed"}]}},
    ])
    res = run_cli("test", repo, "--protected-namespace", "prod")
    assert res.code == 0, res.stdout
    assert res.stdout.splitlines()[-1] == "2 passed, 0 failed"
    res = run_cli("test", repo)  # prod is not protected by default: the case fails
    assert res.code == 1 and res.stdout.splitlines()[-1] == "1 passed, 1 failed"


def test_malformed_test_file_is_reported_at_its_line(repo):
    _case_file(repo, [{"name": "typo", "events": [SHELL], "expcet": "silence"}])
    res = run_cli("test", repo)
    assert res.code == 1
    path = repo / "tests/extra.yaml"
    assert res.stdout.splitlines()[0].startswith(f"FAIL {path}:")
    assert "unknown case key 'expcet'" in res.stdout
    assert res.stdout.splitlines()[-1] == "0 passed, 2 failed"


def test_usage_errors(repo, tmp_path):
    assert run_cli("test", tmp_path / "nope").code == 2
    assert run_cli("test", repo, "--enabled-actions", "zap").code == 2
    empty = tmp_path / "empty"
    (empty / "policies").mkdir(parents=True)
    res = run_cli("test", empty)
    assert res.code == 1 and "no test cases" in res.stderr


def test_disabled_action_in_the_deployment_fails_the_run(repo):
    res = run_cli("test", repo, "--values", repo / "deploy/values.yaml")
    assert res.code == 0
    res = run_cli("test", repo, "--disabled-actions", "label_pod")
    assert res.code == 1 and "action 'label_pod' is disabled" in res.stdout
