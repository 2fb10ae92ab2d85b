"""`enforcer validate` on a policy repository: rules and policies checked together."""

from __future__ import annotations

import pytest

from tests.unit.clirun import run_cli
from tests.unit.gitops.conftest import EXAMPLE, edit


def test_example_repository_is_valid():
    res = run_cli("validate", EXAMPLE)
    assert res.code == 0, res.stdout + res.stderr
    assert res.stdout.startswith("26 rules, 87 macros, 50 lists; 3 policies, 7 actions; "
                                 "digest ")
    assert res.stderr == ""


def test_example_json_counts_and_digest():
    doc = run_cli("validate", "--format", "json", EXAMPLE).json()
    digest = doc.pop("digest")
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert doc == {"rules": 26, "macros": 87, "lists": 50, "enabled": 26, "policies": 3,
                   "policies_enabled": 3, "policy_actions": 7, "cases": 6, "errors": [],
                   "warnings": []}


def test_digest_names_content_not_location(repo):
    first = run_cli("validate", "--format", "json", EXAMPLE).json()["digest"]
    assert run_cli("validate", "--format", "json", repo).json()["digest"] == first
    edit(repo / "policies/observe.yaml", "max: 10", "max: 11")
    assert run_cli("validate", "--format", "json", repo).json()["digest"] != first


def test_policy_naming_a_renamed_rule_is_an_error_at_its_name(repo):
    line = edit(repo / "rules/local_rules.yaml", "- rule: Package manager run in production pod",
                "- rule: Package manager started in production pod")
    assert line > 0
    res = run_cli("validate", repo)
    assert res.code == 1
    policy_file = repo / "policies/contain.yaml"
    where = policy_file.read_text().splitlines()
    row = next(i for i, text in enumerate(where, 1) if "[Package manager run" in text)
    col = where[row - 1].index("Package") + 1
    assert res.stdout.splitlines() == [
        f"{policy_file}:{row}:{col}: policy 'stop-package-manager-in-production': no rule "
        "named 'Package manager run in production pod' is loaded; did you mean 'Package "
        "manager started in production pod'?"]
    doc = run_cli("validate", "--format", "json", repo).json()
    assert doc["digest"] is None and doc["warnings"] == []
    assert doc["errors"] == [{"file": str(policy_file), "line": row, "column": col,
                              "message": res.stdout.split(": ", 1)[1].strip()}]


def test_glob_matching_no_rule_is_a_warning(repo):
    edit(repo / "policies/observe.yaml", "rules: [Read sensitive file untrusted]",
         'rules: [Read sensitive file untrusted, "Mining *"]')
    res = run_cli("validate", repo)
    assert res.code == 0
    assert "warning: policy 'observe-sensitive-reads': rule pattern 'Mining *' matches no " \
           "loaded rule" in res.stderr
    doc = run_cli("validate", "--format", "json", repo).json()
    assert [w["message"] for w in doc["warnings"]] == [
        "policy 'observe-sensitive-reads': rule pattern 'Mining *' matches no loaded rule"]


@pytest.mark.parametrize("how", [
    ("--disabled-actions", "cordon"),
    ("--enabled-actions", "kill,delete_pod,label_pod,networkpolicy,snapshot"),
    ("--values", "deploy/values.yaml"),
    ("ENV", "kill,delete_pod,label_pod,networkpolicy,quarantine,snapshot,notify"),
])
def test_action_disabled_in_the_deployment_is_an_error(repo, monkeypatch, how):
    line = edit(repo / "policies/contain.yaml", "    - label_pod:",
                "    - cordon: {}\n    - label_pod:")
    flag, value = how
    if flag == "ENV":
        monkeypatch.setenv("ENFORCER_ENABLED_ACTIONS", value)
        argv = ["validate", repo]
    else:
        argv = ["validate", repo, flag, repo / value if flag == "--values" else value]
    res = run_cli(*argv)
    assert res.code == 1, res.stdout + res.stderr
    assert res.stdout.startswith(f"{repo / 'policies/contain.yaml'}:{line}:7: policy "
                                 "'stop-package-manager-in-production': action 'cordon' is "
                                 "disabled in this deployment")
    assert run_cli("validate", repo, "--enabled-actions", "kill,cordon,label_pod,snapshot,"
                   "networkpolicy,delete_pod").code == 0


def test_every_action_allowed_without_deployment_information(repo):
    edit(repo / "policies/contain.yaml", "    - label_pod:", "    - cordon: {}\n    - label_pod:")
    assert run_cli("validate", repo).code == 0


def test_unknown_action_in_a_flag_is_a_usage_error(repo):
    res = run_cli("validate", repo, "--disabled-actions", "cordn")
    assert res.code == 2 and "unknown action 'cordn'" in res.stderr


def test_in_kernel_kill_is_refused_with_the_reason(repo):
    line = edit(repo / "policies/contain.yaml", "    - kill: {signal: KILL}",
                "    - kill: {signal: KILL, in_kernel: true}")
    res = run_cli("validate", repo)
    assert res.code == 1
    assert res.stdout.startswith(f"{repo / 'policies/contain.yaml'}:{line}:7: policy "
                                 "'stop-package-manager-in-production': rule 'Package manager "
                                 "run in production pod' cannot be enforced in the kernel: ")


def test_rule_errors_and_policy_errors_together(repo):
    edit(repo / "rules/local_rules.yaml", "and proc.name in (package_mgmt_binaries)",
         "and proc.colour in (package_mgmt_binaries)")
    edit(repo / "policies/observe.yaml", "dry_run: true", "dry_run: maybe")
    res = run_cli("validate", repo)
    assert res.code == 1
    files = [line.split(":", 1)[0] for line in res.stdout.splitlines()]
    assert files == [str(repo / "rules/local_rules.yaml"), str(repo / "policies/observe.yaml")]


def test_files_told_apart_by_content(repo, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a_policies.yaml").write_text((repo / "policies/contain.yaml").read_text())
    (flat / "b_rules.yaml").write_text((repo / "rules/local_rules.yaml").read_text())
    bundled = EXAMPLE.parents[2] / "policies/rules/falco_rules.yaml"
    res = run_cli("validate", bundled, flat)
    assert res.code == 0, res.stdout
    assert res.stdout.startswith("26 rules, 87 macros, 50 lists; 2 policies, 5 actions")


def test_policy_file_alone_is_checked_against_the_bundled_rules(repo):
    res = run_cli("validate", repo / "policies/observe.yaml")
    assert res.code == 0, res.stdout
    assert res.stdout.startswith("25 rules, 87 macros, 49 lists; 1 policies, 2 actions")
    res = run_cli("validate", repo / "policies/contain.yaml")
    assert res.code == 1 and "no rule named 'Package manager run in production pod'" \
        in res.stdout


def test_rules_only_output_is_unchanged(repo):
    res = run_cli("validate", repo / "rules")
    assert res.code == 1  # local rules alone lack the bundled macros they build on
    assert "policies" not in res.stdout


def test_test_cases_that_can_never_pass_are_findings(repo):
    tests = repo / "tests/contain-shell.yaml"
    line = edit(tests, "        - {policy: contain-shell-in-production, action: networkpolicy}",
                "        - {policy: contain-shell-in-production, action: quarantine}")
    rline = edit(tests, "      rules: [Terminal shell in container]\n      actions: []",
                 "      rules: [Terminal shell in a container]\n      actions: []")
    res = run_cli("validate", repo)
    assert res.code == 1
    assert res.stdout.splitlines() == [
        f"{tests}:{line}:11: case 'kubectl exec into a production pod is contained' expects "
        "action 'quarantine' of policy 'contain-shell-in-production', which has only "
        "delete_pod, networkpolicy, snapshot",
        f"{tests}:{rline}:15: case 'the same shell in a development namespace is only "
        "detected' expects rule 'Terminal shell in a container', which is not loaded"]
