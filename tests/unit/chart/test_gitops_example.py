"""docs/gitops/example: the policy repository users copy. Its pieces must fit each other and
the chart: the ConfigMaps kustomize renders are the ones the Helm values name, the actions its
policies use are the ones the deployment enables (and CI is told), and the CI jobs' annotation
scripts turn validate's JSON into annotations.

Running `enforcer validate` and `enforcer test` on it belongs with those commands' own tests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO
from tests.unit.chart.chart_render import KUBE_VERSION, container, helm

EXAMPLE = REPO / "docs" / "gitops" / "example"
GITHUB = EXAMPLE / ".github" / "workflows" / "policies.yaml"
GITLAB = EXAMPLE / ".gitlab-ci.yml"


def load(path: Path):
    return yaml.safe_load(path.read_text())


def example_yaml_files() -> list[Path]:
    return sorted(p for p in EXAMPLE.rglob("*") if p.suffix in (".yaml", ".yml"))


def policies() -> list[dict]:
    return [p for f in sorted((EXAMPLE / "policies").glob("*.yaml")) for p in load(f)]


def action_names(policy: dict) -> list[str]:
    return [next(iter(action)) for action in policy["actions"]]


def rule_names(path: Path) -> set[str]:
    return {item["rule"] for item in load(path) if "rule" in item}


def rendered_deployment(kube_tools) -> list[dict]:
    out = helm(kube_tools, "template", "enforcer", str(REPO / "charts/enforcer"), "--namespace",
               "enforcer", "--kube-version", KUBE_VERSION,
               "--values", str(EXAMPLE / "deploy/values.yaml"))
    return [d for d in yaml.safe_load_all(out) if d]


def enabled_actions(objects: list[dict]) -> set[str]:
    env = {e["name"]: e.get("value") for e in container(objects)["env"]}
    return set(env["ENFORCER_ENABLED_ACTIONS"].split(","))


def test_layout():
    for directory in ("rules", "policies", "tests", "deploy"):
        assert (EXAMPLE / directory).is_dir()
    assert list((EXAMPLE / "tests").glob("*.yaml"))


@pytest.mark.parametrize("path", example_yaml_files(), ids=lambda p: str(p.relative_to(EXAMPLE)))
def test_every_file_is_valid_yaml(path):
    assert load(path) is not None


def test_kustomize_renders_the_config_maps_the_chart_values_name(kube_tools):
    out = subprocess.run([str(kube_tools.kubectl), "kustomize", str(EXAMPLE)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    maps = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out.stdout) if d}
    for obj in maps.values():
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    values = load(EXAMPLE / "deploy/values.yaml")
    policies_map = maps[values["policies"]["existingConfigMap"]]
    rules_map = maps[values["rules"]["existingConfigMap"]]
    assert set(policies_map["data"]) == {p.name for p in (EXAMPLE / "policies").glob("*.yaml")}
    assert set(rules_map["data"]) == {p.name for p in (EXAMPLE / "rules").glob("*.yaml")}
    for name, text in policies_map["data"].items():
        assert text == (EXAMPLE / "policies" / name).read_text()


def test_deployment_values_render_valid_objects(kube_tools):
    objects = rendered_deployment(kube_tools)
    for obj in objects:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    args = container(objects)["args"]
    assert "--dry-run" not in args
    assert args[args.index("--policies") + 1] == "/etc/enforcer/policies"


def test_ci_is_told_exactly_the_actions_the_deployment_enables(kube_tools):
    deployed = enabled_actions(rendered_deployment(kube_tools))
    assert "cordon" not in deployed  # deploy/values.yaml disables it
    github = set(load(GITHUB)["env"]["ENFORCER_ENABLED_ACTIONS"].split(","))
    gitlab = set(load(GITLAB)["variables"]["ENFORCER_ENABLED_ACTIONS"].split(","))
    assert github == gitlab == deployed


def test_policies_use_only_enabled_actions_and_existing_rules(kube_tools):
    deployed = enabled_actions(rendered_deployment(kube_tools))
    known_rules = (rule_names(REPO / "policies/rules/falco_rules.yaml")
                   | rule_names(EXAMPLE / "rules/local_rules.yaml"))
    for policy in policies():
        assert set(action_names(policy)) <= deployed, policy["policy"]
        assert set(policy["match"]["rules"]) <= known_rules, policy["policy"]


def test_test_cases_expect_existing_policies_in_their_action_order():
    by_name = {p["policy"]: p for p in policies()}
    cases = [c for f in sorted((EXAMPLE / "tests").glob("*.yaml")) for c in load(f)["cases"]]
    assert len(cases) >= 4
    assert any(c["expect"] == "silence" for c in cases)
    for case in cases:
        assert case["events"], case["name"]
        for event in case["events"]:
            assert all(re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)+(\[\d+\])?", k) for k in event)
        if case["expect"] == "silence":
            continue
        planned: dict[str, list[str]] = {}
        for step in case["expect"]["actions"]:
            planned.setdefault(step["policy"], []).append(step["action"])
        for policy, actions in planned.items():
            assert actions == action_names(by_name[policy]), case["name"]


def test_example_passes_enforcer_validate_and_test():
    """The checks CI runs on the repository (their behaviour on broken copies is tested in
    tests/unit/gitops)."""
    from tests.unit.clirun import run_cli

    validate = run_cli("validate", EXAMPLE, "--values", EXAMPLE / "deploy/values.yaml")
    assert validate.code == 0, validate.stdout + validate.stderr
    tested = run_cli("test", EXAMPLE, "--values", EXAMPLE / "deploy/values.yaml")
    assert tested.code == 0, tested.stdout
    cases = [c for f in sorted((EXAMPLE / "tests").glob("*.yaml")) for c in load(f)["cases"]]
    assert tested.stdout.splitlines()[-1] == f"{len(cases)} passed, 0 failed"


def _script(text: str) -> str:
    """The Python program embedded as a `python3 - <<'PY' ... PY` heredoc."""
    match = re.search(r"python3 - <<'PY'\n(.*?)\n\s*PY\n", text, flags=re.S)
    assert match, "no embedded annotation script"
    lines = match.group(1).splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines) + "\n"


# The shape `enforcer validate --format json` prints for a policy repository.
VALIDATE_REPORT = {
    "rules": 26, "macros": 87, "lists": 50, "enabled": 26, "policies": 3,
    "policies_enabled": 3, "policy_actions": 7, "digest": None,
    "errors": [{"file": "policies/contain.yaml", "line": 12, "column": 7,
                "message": "unknown action 'cordn'; known: cordon, delete_pod, kill"}],
    "warnings": [{"file": "rules/local_rules.yaml", "line": 3, "column": 1,
                  "message": "macro overrides a bundled macro"}],
}


def _run_script(script: str, tmp_path: Path) -> str:
    (tmp_path / "validate.json").write_text(json.dumps(VALIDATE_REPORT))
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_github_job_runs_both_checks_and_annotates_findings(tmp_path):
    steps = load(GITHUB)["jobs"]["validate"]["steps"]
    run = next(s["run"] for s in steps if "run" in s)
    assert "enforcer validate --format json . > validate.json" in run
    assert "exit $status" in run
    test_steps = load(GITHUB)["jobs"]["test"]["steps"]
    assert any(s.get("run") == "enforcer test ." for s in test_steps)
    lines = _run_script(_script(run), tmp_path).splitlines()
    assert lines == [
        "::error file=policies/contain.yaml,line=12,col=7::unknown action 'cordn'; known: "
        "cordon, delete_pod, kill",
        "::warning file=rules/local_rules.yaml,line=3,col=1::macro overrides a bundled macro",
    ]


def test_gitlab_job_runs_both_checks_and_writes_a_code_quality_report(tmp_path):
    ci = load(GITLAB)
    script = "\n".join(ci["validate"]["script"])
    assert "enforcer validate --format json . > validate.json" in script
    assert ci["validate"]["artifacts"]["reports"]["codequality"] == "gl-code-quality.json"
    assert "enforcer test ." in ci["test"]["script"]
    _run_script(_script(script + "\n"), tmp_path)
    issues = json.loads((tmp_path / "gl-code-quality.json").read_text())
    assert [(i["location"]["path"], i["location"]["lines"]["begin"], i["severity"])
            for i in issues] == [("policies/contain.yaml", 12, "critical"),
                                 ("rules/local_rules.yaml", 3, "minor")]
    assert len({i["fingerprint"] for i in issues}) == 2
