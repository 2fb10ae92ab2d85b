"""`enforcer policies import-talon`: Falco Talon rule files become our response policies.
Talon's own example files (tests/data/falco-talon) import with every refusal explained at
FILE:LINE:COL; a Talon file using what we can map turns into policies that answer the same
alerts as Talon's rules would."""

from __future__ import annotations

from pathlib import Path

import yaml

from enforcer.alert import Alert
from enforcer.policy.loader import load_policies
from enforcer.priority import Priority
from tests.conftest import REPO
from tests.unit.clirun import run_cli

TALON = REPO / "tests" / "data" / "falco-talon"

MINE = """\
- action: Terminate Pod
  actionner: kubernetes:terminate
  parameters:
    grace_period_seconds: 5

- action: Isolate
  actionner: kubernetes:networkpolicy
  ignore_errors: true
  parameters:
    allow_cidr: ["10.0.0.0/8"]

- action: Label Pod as Suspicious
  actionner: kubernetes:label
  ignore_errors: true
  parameters:
    labels:
      suspicious: "true"

- rule: Shell outside system namespaces
  description: >
    Terminate a pod where a shell starts, outside kube-system and falco
  match:
    rules:
      - Terminal shell in container
    priority: ">=Notice"
    output_fields:
      - k8s.ns.name!=kube-system, k8s.ns.name!=falco
  notifiers:
    - slack
  actions:
    - action: Terminate Pod
      parameters:
        grace_period_seconds: 0
    - action: Label Pod as Suspicious

- rule: Isolate and label
  continue: false
  match:
    priority: Critical
    tags:
      - network, mitre_exfiltration
      - container
    output_fields:
      - k8s.ns.name=prod
      - k8s.ns.name=staging, k8s.pod.name=web
  actions:
    - action: Isolate
      parameters:
        allow_cidr: ["192.168.0.0/16"]
    - action: Label Pod as Suspicious
    - action: Drain it
      actionner: kubernetes:drain
"""


def alert(rule: str = "Terminal shell in container", priority: Priority = Priority.NOTICE,
          tags: tuple[str, ...] = (), **fields: str) -> Alert:
    return Alert(rule=rule, priority=priority, output="x", time_ns=0, tags=tags,
                 output_fields={k.replace("_", "."): v for k, v in fields.items()})


def test_talons_example_files_import_with_every_refusal_explained(tmp_path: Path) -> None:
    out = tmp_path / "policies.yaml"
    res = run_cli("policies", "import-talon", TALON / "rules.yaml",
                  TALON / "rules_override.yaml", "--write", out)
    assert res.code == 1  # some rules were refused
    policies = load_policies([out]).policies
    assert [p.name for p in policies] == ["Test node drain"]
    assert [s.name for s in policies[0].actions] == ["cordon"] and policies[0].dry_run
    talon_rules = [item["rule"] for item in yaml.safe_load((TALON / "rules.yaml").read_text())
                   if "rule" in item]
    for name in talon_rules:  # every rule is imported or its refusal is said
        assert name == "Test node drain" or f"rule {name!r}: not imported" in res.stderr
    lines = (TALON / "rules.yaml").read_text().splitlines()
    refusals = [line for line in res.stderr.splitlines() if ": refused: " in line]
    for line in refusals:  # each points at the action entry of the rule it names
        _, number, column, _ = line.split(":", 3)
        assert lines[int(number) - 1][int(column) - 1:].startswith("action: "), line
    text = res.stderr
    assert "(kubernetes:exec): refused: runs a command in the pod, built from event fields" \
        in text
    assert "(kubernetes:drain): refused: enforcer has no drain" in text
    assert "(cilium:networkpolicy): refused" in text and "(aws:lambda)" not in text
    # the override file's parameters count: Terminate Pod is refused for them
    assert "rules.yaml:64:7: rule 'Terminal shell in container', action 'Terminate Pod' " \
           "(kubernetes:terminate): refused: ignore_daemonsets, ignore_statefulsets, " \
           "ignore_standalone_pods" in text
    assert "unknown parameter 'allow' (Talon ignores unknown parameters" in text


def test_a_mappable_talon_file_becomes_policies_that_answer_the_same_alerts(
        tmp_path: Path) -> None:
    source = tmp_path / "talon.yaml"
    source.write_text(MINE)
    out = tmp_path / "policies.yaml"
    res = run_cli("policies", "import-talon", source, "--write", out)
    assert res.code == 1, res.stderr  # the drain is refused
    assert f"{source}:51:7: rule 'Isolate and label', action 'Drain it' (kubernetes:drain): " \
           "refused" in res.stderr
    assert f"{source}:29:7: rule 'Shell outside system namespaces': notifier 'slack' " \
           "refused: Slack is not offered" in res.stderr
    assert "continue: false is lost" not in res.stderr  # carried over: final
    assert "the actions after 'Terminate Pod' never run in Talon" in res.stderr
    policies = {p.name: p for p in load_policies([out]).policies}
    assert set(policies) == {"Shell outside system namespaces", "Isolate and label (tags 1)",
                             "Isolate and label (tags 2)"}
    shell = policies["Shell outside system namespaces"]
    assert [s.name for s in shell.actions] == ["delete_pod"]  # terminate stops the rule
    assert shell.actions[0].action.params.grace_period == 0  # the rule's own parameter
    assert shell.dry_run and shell.on_failure == "stop"
    assert shell.match.matches(alert(k8s_ns_name="prod"))
    assert not shell.match.matches(alert(k8s_ns_name="falco"))
    assert not shell.match.matches(alert(priority=Priority.INFORMATIONAL, k8s_ns_name="prod"))
    isolate = policies["Isolate and label (tags 1)"]
    assert [s.name for s in isolate.actions] == ["networkpolicy", "label_pod"]
    assert isolate.actions[0].action.params.allowed_cidrs == ("10.0.0.0/8", "192.168.0.0/16")
    assert isolate.on_failure == "continue"  # ignore_errors on every action kept
    crit = Priority.CRITICAL
    net = ("network", "mitre_exfiltration")
    assert isolate.match.matches(alert(priority=crit, tags=net, k8s_ns_name="prod"))
    assert isolate.match.matches(alert(priority=crit, tags=net, k8s_ns_name="staging",
                                       k8s_pod_name="web"))
    assert not isolate.match.matches(alert(priority=crit, tags=net, k8s_ns_name="staging",
                                           k8s_pod_name="db"))
    assert not isolate.match.matches(alert(priority=Priority.ALERT, tags=net,
                                           k8s_ns_name="prod"))  # exactly Critical
    assert not isolate.match.matches(alert(priority=crit, tags=("network",),
                                           k8s_ns_name="prod"))
    assert policies["Isolate and label (tags 2)"].match.matches(
        alert(priority=crit, tags=("container",), k8s_ns_name="prod"))
    # continue: false -> final: the policies after it do not answer what it matched
    assert isolate.final and policies["Isolate and label (tags 2)"].final
    assert not shell.final


TALON_CONFIG = """\
default_notifiers:
  - k8sevents
notifiers:
  webhook:
    url: "http://127.0.0.1:9/talon"
    user_agent: "my-talon"
    custom_headers:
      Authorization: "Bearer xxxxx"
  slack:
    webhook_url: "https://hooks.slack.com/services/XXXX"
"""


def test_talons_webhook_notifier_becomes_a_notify_action(tmp_path: Path) -> None:
    source = tmp_path / "talon.yaml"
    source.write_text(MINE.replace("    - slack\n", "    - webhook\n"))
    config = tmp_path / "config.yaml"
    config.write_text(TALON_CONFIG)
    out = tmp_path / "policies.yaml"
    res = run_cli("policies", "import-talon", source, "--talon-config", config, "--write", out)
    policies = {p.name: p for p in load_policies([out]).policies}
    shell = policies["Shell outside system namespaces"]
    assert [s.name for s in shell.actions] == ["delete_pod", "notify"]
    notify = shell.actions[-1].action.params
    assert notify.url == "http://127.0.0.1:9/talon"
    assert notify.headers == {"Authorization": "Bearer xxxxx", "User-Agent": "my-talon"}
    # Talon's default_notifiers apply to every rule: k8sevents is the agent's own switch
    assert f"{config}:2:5: warning: rule 'Shell outside system namespaces': notifier " \
           "'k8sevents' is the agent's --kubernetes-events true" in res.stderr
    assert [s.name for s in policies["Isolate and label (tags 1)"].actions] == [
        "networkpolicy", "label_pod"]
    # without Talon's configuration the webhook's URL is unknown: refused, with the way out
    res = run_cli("policies", "import-talon", source, "--write", out)
    assert f"{source}:29:7: rule 'Shell outside system namespaces': notifier 'webhook' " \
           "refused: its URL is in Talon's configuration; give it with --talon-config" \
           in res.stderr
    assert [s.name for s in load_policies([out]).policies[0].actions] == ["delete_pod"]
    # a POST is all notify sends
    config.write_text(TALON_CONFIG.replace('  webhook:\n', '  webhook:\n    http_method: PUT\n'))
    res = run_cli("policies", "import-talon", source, "--talon-config", config)
    assert "notifier 'webhook' refused: http_method PUT: notify only POSTs" in res.stderr


def test_a_refused_rule_with_continue_false_says_what_widens(tmp_path: Path) -> None:
    source = tmp_path / "talon.yaml"
    source.write_text("- rule: stopper\n  continue: false\n  match: {rules: [a]}\n"
                      "  actions:\n    - action: x\n      actionner: kubernetes:exec\n"
                      "- rule: later\n  match: {rules: [a]}\n  actions:\n"
                      "    - action: y\n      actionner: kubernetes:cordon\n")
    res = run_cli("policies", "import-talon", source)
    assert res.code == 1
    assert f"{source}:2:13: rule 'stopper': not imported, so its continue: false is lost: " \
           "the policies after it also answer its alerts" in res.stderr


def test_a_broken_talon_file_is_located(tmp_path: Path) -> None:
    source = tmp_path / "talon.yaml"
    source.write_text("- rule: x\n  match: {rules: [a]}\n  actions:\n    - action: nope\n"
                      "- rule: y\n  match:\n    priority: Loudest\n  actions: [{action: a}]\n"
                      "- rule: [\n")
    res = run_cli("policies", "import-talon", source)
    assert res.code == 1
    assert f"{source}:10:1: invalid YAML" in res.stderr
    source.write_text(source.read_text().rsplit("- rule: [", 1)[0])
    res = run_cli("policies", "import-talon", source)
    assert f"{source}:4:7: rule 'x', action 'nope' (no actionner): refused" in res.stderr
    assert f"{source}:7:15: rule 'y': refused: priority 'Loudest'" in res.stderr
