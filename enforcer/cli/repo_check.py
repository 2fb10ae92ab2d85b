"""`enforcer validate` on rules and policies together (a policy repository, or policy files
among the paths): the checks of enforcer.gitops, printed as FILE:LINE:COL: message."""

from __future__ import annotations

import argparse
import json
import sys

from enforcer.cli.rules_args import print_diagnostics
from enforcer.gitops.bundle import check_bundle
from enforcer.gitops.cases import check_references, load_cases
from enforcer.gitops.deployment import DeploymentError, enabled_actions
from enforcer.gitops.digest import short
from enforcer.gitops.layout import Layout, load_paths


def deployment_actions(args: argparse.Namespace, prog: str) -> set[str] | None | int:
    """The enabled actions from the flags, environment and values files; 2 on a usage
    mistake (after printing it)."""
    try:
        return enabled_actions(args.enabled_actions, args.disabled_actions, args.values)
    except DeploymentError as exc:
        print(f"enforcer {prog}: {exc}", file=sys.stderr)
        return 2


def run_repo_check(args: argparse.Namespace, layout: Layout) -> int:
    allowed = deployment_actions(args, "validate")
    if isinstance(allowed, int):
        return allowed
    rule_paths, policy_paths = load_paths(layout, bundled_rules=not args.no_bundled_rules)
    checked = check_bundle(rule_paths, policy_paths, enabled_actions=allowed)
    cases = 0
    loaded = checked.ruleset is not None and not checked.errors
    for path in layout.tests:  # test cases that can never pass are findings too
        found, problems = load_cases(path)
        cases += len(found)
        checked.diagnostics += problems
        if loaded:
            checked.diagnostics += check_references(found, checked.ruleset, checked.policies)
    counts = checked.ruleset.counts() if checked.ruleset is not None else {
        "rules": 0, "macros": 0, "lists": 0, "enabled": 0}
    policy_counts = checked.policies.counts()
    errors, warnings = checked.errors, checked.warnings
    if args.format == "json":
        print(json.dumps({**counts, "policies": policy_counts["policies"],
                          "policies_enabled": policy_counts["enabled"],
                          "policy_actions": policy_counts["actions"], "cases": cases,
                          "digest": short(checked.digest) if not errors else None,
                          "errors": [d.as_dict() for d in errors],
                          "warnings": [d.as_dict() for d in warnings]}))
    else:
        print_diagnostics(errors, sys.stdout)
        print_diagnostics(warnings, sys.stderr)
        if not errors:
            print(f"{counts['rules']} rules, {counts['macros']} macros, {counts['lists']} "
                  f"lists; {policy_counts['policies']} policies, {policy_counts['actions']} "
                  f"actions; digest {short(checked.digest)}")
    return 1 if errors else 0
