"""`kill: {in_kernel: true}`: validate accepts a rule whose residue the kernel checks exactly
(upstream "Read sensitive file untrusted"), refuses others with the reason at the policy's
FILE:LINE:COL, and the agent only arms acting, non-dry-run policies."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from enforcer.policy.in_kernel import in_kernel_rules
from enforcer.policy.loader import load_policies
from enforcer.policy.validate import validate_policies
from enforcer.rules.loader import load_rules

UPSTREAM = Path(__file__).resolve().parents[2] / "data" / "falco-rules" / "falco_rules.yaml"
UNTRUSTED = "Read sensitive file untrusted"
CUSTOM = """\
- rule: Shadow by substring
  desc: d
  condition: evt.type = openat and fd.name contains shadow and proc.name = cat
  output: o
  priority: WARNING
- rule: Shadow exactly
  desc: d
  condition: evt.type = openat and fd.name = /etc/shadow and proc.name = cat
  output: o
  priority: WARNING
"""


def policy(rule: str, extra: str = "", dry_run: str = "false") -> str:
    return (f"- policy: p\n  match: {{rules: [{rule}]}}\n  actions:\n{extra}"
            f"    - kill: {{in_kernel: true}}\n  dry_run: {dry_run}\n")


@pytest.fixture(scope="module")
def upstream():
    return load_rules([str(UPSTREAM)])


def test_upstream_untrusted_reader_is_accepted(tmp_path: Path, upstream) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy(UNTRUSTED))
    assert validate_policies([path], upstream)[1] == []


def test_ineligible_rule_refused_at_file_line_col(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(CUSTOM)
    path = tmp_path / "p.yaml"
    path.write_text(policy("Shadow by substring"))
    _, diags = validate_policies([path], load_rules([str(rules)]))
    (d,) = diags
    assert (d.file, d.line, d.column) == (str(path), 4, 7)
    assert "'Shadow by substring' cannot be enforced in the kernel" in d.message
    assert "fd.name contains shadow" in d.message
    path.write_text(policy("Shadow exactly"))
    assert validate_policies([path], load_rules([str(rules)]))[1] == []


def test_cli_validate_says_why(tmp_path: Path, enforcer_cmd: list[str],
                               cli_env: dict[str, str]) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(CUSTOM)
    path = tmp_path / "p.yaml"
    path.write_text(policy("Shadow by substring"))
    done = subprocess.run(enforcer_cmd + ["validate", str(rules), str(path)],
                          capture_output=True, text=True, env=cli_env)
    assert done.returncode == 1
    assert done.stdout.startswith(f"{path}:4:7: policy 'p': rule 'Shadow by substring' "
                                  "cannot be enforced in the kernel: `fd.name contains shadow`")


def test_snapshot_of_paths_with_in_kernel_kill_warns(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy(UNTRUSTED, "    - snapshot: {paths: [/tmp]}\n"))
    policies = load_policies([path])
    (w,) = policies.warnings
    assert w.severity == "warning" and "before any snapshot runs" in w.message
    assert (w.line, w.column) == (5, 25)  # at in_kernel


def test_only_acting_policies_arm_the_kernel(tmp_path: Path, upstream) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy(UNTRUSTED))
    policies = load_policies([path])
    rules, warnings = in_kernel_rules(policies, upstream, dry_run=False)
    assert [r.name for r in rules] == [UNTRUSTED] and warnings == []
    assert in_kernel_rules(policies, upstream, dry_run=True) == ([], [])
    path.write_text(policy(UNTRUSTED, dry_run="true"))
    assert in_kernel_rules(load_policies([path]), upstream, dry_run=False) == ([], [])
    path.write_text(policy("Directory traversal monitored file read"))
    rules, warnings = in_kernel_rules(load_policies([path]), upstream, dry_run=False)
    assert rules == [] and "cannot be enforced in the kernel" in warnings[0]


def test_a_reload_that_changes_the_kernel_kill_switches_it_off(tmp_path: Path, upstream) -> None:
    from types import SimpleNamespace

    from enforcer.cli.run import _kernel_kill_on_reload

    path = tmp_path / "p.yaml"
    path.write_text(policy(UNTRUSTED))
    rule = upstream.rules[UNTRUSTED]

    class Killer:
        rules_selected = [rule]
        off = False

        def switch_off(self) -> None:
            self.off = True

    def bundle(text: str) -> SimpleNamespace:
        path.write_text(text)
        return SimpleNamespace(policies=load_policies([path]),
                               engine=SimpleNamespace(rules=list(upstream.rules.values())))

    killer = Killer()
    hook = _kernel_kill_on_reload(SimpleNamespace(dry_run=False), killer, lambda new: [])
    assert hook(bundle(policy(UNTRUSTED))) == [] and not killer.off
    gaps = hook(bundle(policy(UNTRUSTED, dry_run="true")))
    assert killer.off and "in-kernel kill is switched off" in gaps[0]


def test_an_earlier_final_policy_keeps_the_kernel_from_killing_for_its_rule(
        tmp_path: Path, upstream) -> None:
    """The kernel kills before any policy is chosen: when an earlier final policy may
    answer the rule's alerts (and so stop the killing policy), the kernel is not armed."""
    path = tmp_path / "p.yaml"
    path.write_text(f"- policy: first\n  final: true\n  match: {{rules: ['{UNTRUSTED}']}}\n"
                    "  actions: [{label_pod: {labels: {seen: 'yes'}}}]\n  dry_run: false\n"
                    + policy(UNTRUSTED))
    rules, warnings = in_kernel_rules(load_policies([path]), upstream, dry_run=False)
    assert rules == []
    assert "earlier final policy 'first'" in warnings[0]
