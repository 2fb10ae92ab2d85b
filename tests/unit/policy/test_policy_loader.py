"""Policy files: good ones load; every mistake is reported at its FILE:LINE:COL."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from enforcer.errors import PolicyError
from enforcer.policy.loader import load_policies
from enforcer.policy.schema import policy_schema
from enforcer.policy.validate import looks_like_policy_file, split_paths, validate_policies
from enforcer.resources import default_responses_dir

GOOD = """\
- policy: contain
  desc: snapshot then kill
  match:
    rules: [Read sensitive file untrusted, "Terminal shell*"]
    priority: ">=notice"
    tags: [filesystem]
    fields: {container.id: [abc123, def456], k8s.ns.name: prod}
    source: syscall
  actions:
    - snapshot: {paths: [/tmp], max_bytes: 10Mi}
    - kill: {signal: TERM, scope: process_group}
    - notify: {url: "http://127.0.0.1:9/hook", headers: {Authorization: Bearer x}}
  dry_run: false
  rate_limit: {max: 5, per: 1m, burst: 2}
  cooldown: 30s
  on_failure: stop
  breaker: {workloads: 3, window: 5m}
  escalate:
    after: 5
    within: 1m
    actions: [quarantine, {delete_pod: {grace_period: 0}}]
"""


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_good_policy_loads_with_every_field(tmp_path: Path) -> None:
    policy_set = load_policies([write(tmp_path, GOOD)])
    (policy,) = policy_set.policies
    assert policy.name == "contain"
    assert [s.name for s in policy.actions] == ["snapshot", "kill", "notify"]
    assert policy.actions[0].action.params.max_bytes == 10 * 1024 * 1024
    assert policy.actions[1].action.params.signal == "SIGTERM"
    assert policy.dry_run is False
    assert (policy.rate_limit.max, policy.rate_limit.per, policy.rate_limit.burst) == (5, 60, 2)
    assert policy.cooldown == 30
    assert policy.on_failure == "stop"
    assert str(policy.match.priority) == ">=notice"
    assert policy.line == 1
    assert (policy.breaker.workloads, policy.breaker.window, policy.breaker.cooloff) == (
        3, 300, None)
    assert (policy.escalate.after, policy.escalate.within) == (5, 60)
    assert [s.name for s in policy.escalate.actions] == ["quarantine", "delete_pod"]


def test_dry_run_is_the_default(tmp_path: Path) -> None:
    path = write(tmp_path, "- policy: p\n  match: {rules: [x]}\n  actions: [kill]\n")
    assert load_policies([path]).policies[0].dry_run is True


def test_bundled_policies_load_are_dry_run_and_fit_the_schema() -> None:
    policy_set = load_policies([default_responses_dir()])
    assert policy_set.policies and all(p.dry_run for p in policy_set.policies)
    for path in policy_set.files:
        jsonschema.validate(yaml.safe_load(Path(path).read_text()), policy_schema())


@pytest.mark.parametrize(("text", "line", "col", "words"), [
    # YAML syntax
    ("- policy: p\n  match: {rules: [x]\n  actions: [kill]\n", 3, 3, "invalid YAML"),
    # unknown policy key, with a suggestion
    ("- policy: p\n  match: {rules: [x]}\n  actions: [kill]\n  dryrun: true\n", 4, 3,
     "did you mean 'dry_run'"),
    # unknown action name
    ("- policy: p\n  match: {rules: [x]}\n  actions:\n    - kil: {}\n", 4, 7,
     "unknown action 'kil'"),
    # wrong parameter type
    ("- policy: p\n  match: {rules: [x]}\n  actions:\n    - delete_pod: {grace_period: soon}\n",
     4, 34, "grace_period: expected an integer"),
    # unknown parameter
    ("- policy: p\n  match: {rules: [x]}\n  actions:\n    - kill: {signl: KILL}\n", 4, 14,
     "unknown parameter 'signl'; did you mean 'signal'"),
    # bad signal value
    ("- policy: p\n  match: {rules: [x]}\n  actions:\n    - kill: {signal: KILLALL}\n", 4, 22,
     "unknown signal"),
    # bad priority
    ("- policy: p\n  match: {priority: '>=loud'}\n  actions: [kill]\n", 2, 21,
     "Invalid priority"),
    # bad rate limit
    ("- policy: p\n  match: {rules: [x]}\n  actions: [kill]\n  rate_limit: {max: 0}\n", 4, 21,
     "rate_limit.max"),
    # bad duration
    ("- policy: p\n  match: {rules: [x]}\n  actions: [kill]\n  cooldown: soon\n", 4, 13,
     "expected a duration"),
    # bad on_failure
    ("- policy: p\n  match: {rules: [x]}\n  actions: [kill]\n  on_failure: retry\n", 4, 15,
     "on_failure must be one of"),
    # missing match
    ("- policy: p\n  actions: [kill]\n", 1, 3, "missing 'match'"),
    # empty actions
    ("- policy: p\n  match: {rules: [x]}\n  actions: []\n", 3, 12, "non-empty list"),
    # not a list
    ("policy: p\n", 1, 1, "YAML list"),
    # bad size
    ("- policy: p\n  match: {rules: [x]}\n  actions:\n    - snapshot: {max_bytes: lots}\n",
     4, 29, "expected a size"),
    # bad CIDR
    ("- policy: p\n  match: {rules: [x]}\n  actions:\n    - quarantine: {allowed_cidrs: [10.0.0.300/8]}\n",  # noqa: E501
     4, 35, "allowed_cidrs"),
    # in_kernel needs exact rule names
    ("- policy: p\n  match: {rules: ['Read*']}\n  actions:\n    - kill: {in_kernel: true}\n",
     4, 25, "must name its rules exactly"),
    # bad breaker
    ("- policy: p\n  match: {rules: [x]}\n  actions: [kill]\n  breaker: {workloads: 0}\n",
     4, 24, "breaker.workloads must be a positive integer"),
    ("- policy: p\n  match: {rules: [x]}\n  actions: [kill]\n  breaker: {pods: 3}\n",
     4, 13, "unknown breaker key 'pods'"),
    ("- policy: p\n  match: {rules: [x]}\n  actions: [kill]\n  breaker: {cooloff: later}\n",
     4, 22, "breaker.cooloff"),
    # bad escalation
    ("- policy: p\n  match: {rules: [x]}\n  actions: [kill]\n  escalate: {after: 1, actions: "
     "[quarantine]}\n", 4, 21, "escalate.after"),
    ("- policy: p\n  match: {rules: [x]}\n  actions: [kill]\n  escalate: {after: 5, actions: "
     "[quarantin]}\n", 4, 34, "unknown action 'quarantin'"),
    # in_kernel only for SIGKILL
    ("- policy: p\n  match: {rules: [x]}\n  actions:\n    - kill: {in_kernel: true, signal: TERM}\n",  # noqa: E501
     4, 25, "only signal KILL"),
])
def test_mistakes_are_located(tmp_path: Path, text: str, line: int, col: int,
                              words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        load_policies([path])
    first = caught.value.diagnostics[0]
    assert words in first.message, str(first)
    assert (first.file, first.line, first.column) == (str(path), line, col), str(first)


def test_all_problems_are_reported_not_just_the_first(tmp_path: Path) -> None:
    path = write(tmp_path, "- policy: a\n  match: {rules: [x]}\n  actions: [explode]\n"
                           "- policy: b\n  match: {rules: [x]}\n"
                           "  actions: [{kill: {scope: all}}]\n")
    with pytest.raises(PolicyError) as caught:
        load_policies([path])
    assert [d.line for d in caught.value.diagnostics] == [3, 6]


def test_duplicate_names_need_override(tmp_path: Path) -> None:
    one = write(tmp_path, "- policy: p\n  match: {rules: [x]}\n  actions: [kill]\n", "1.yaml")
    two = write(tmp_path, "- policy: p\n  match: {rules: [y]}\n  actions: [kill]\n", "2.yaml")
    with pytest.raises(PolicyError, match="already defined"):
        load_policies([one, two])
    two.write_text("- policy: p\n  override: true\n  match: {rules: [y]}\n  actions: [kill]\n")
    (policy,) = load_policies([tmp_path]).policies
    assert policy.match.rules == ("y",)


def test_schema_rejects_what_the_loader_rejects() -> None:
    bad = [{"policy": "p", "match": {"rules": ["x"]}, "actions": [{"kill": {"signl": "KILL"}}]},
           {"policy": "p", "match": {"rules": ["x"]}, "actions": [{"kil": {}}]},
           {"policy": "p", "match": {"rules": ["x"]}, "actions": [
               {"delete_pod": {"grace_period": "soon"}}]}]
    for item in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate([item], policy_schema())


def test_in_kernel_without_the_rules_is_refused_with_a_reason(
        tmp_path: Path) -> None:
    path = write(tmp_path, "- policy: p\n  match: {rules: [Read sensitive file untrusted]}\n"
                           "  actions:\n    - kill: {in_kernel: true}\n")
    summary, diagnostics = validate_policies([path])
    assert summary == "1 policies, 1 actions"
    assert len(diagnostics) == 1
    assert "cannot be enforced in the kernel" in diagnostics[0].message
    assert (diagnostics[0].line, diagnostics[0].column) == (4, 7)


def test_policy_files_are_told_apart_from_rule_files(tmp_path: Path) -> None:
    policy = write(tmp_path, "# comment\n\n" + GOOD)
    rules = write(tmp_path, "- rule: x\n", "r.yaml")
    assert looks_like_policy_file(policy)
    assert not looks_like_policy_file(rules)
    assert split_paths([tmp_path]) == ([str(rules)], [str(policy)])
    assert split_paths([str(rules), str(policy)]) == ([str(rules)], [str(policy)])


def test_cli_reports_file_line_col_and_exits_1(tmp_path: Path, enforcer_cmd: list[str],
                                               cli_env: dict[str, str]) -> None:
    path = write(tmp_path, "- policy: p\n  match: {rules: [x]}\n  actions:\n"
                           "    - delete_pod: {grace_period: soon}\n")
    done = subprocess.run(enforcer_cmd + ["policies", "validate", str(path)],
                          capture_output=True, text=True, env=cli_env)
    assert done.returncode == 1
    assert f"{path}:4:34: delete_pod: grace_period: expected an integer" in done.stderr
    assert "Traceback" not in done.stderr
    good = subprocess.run(enforcer_cmd + ["policies", "validate"], capture_output=True,
                          text=True, env=cli_env)
    assert good.returncode == 0, good.stderr
    assert "policies" in good.stdout


def test_cli_prints_the_schema(enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    import json
    done = subprocess.run(enforcer_cmd + ["schema", "policy"], capture_output=True, text=True,
                          env=cli_env)
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["items"]["properties"]) >= {"policy", "match", "actions", "rate_limit"}
