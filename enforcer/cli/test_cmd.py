"""`enforcer test DIR...`: run the policy test cases of a policy repository (`tests/*.yaml`)
through its rules and policies — the real rules engine and the real responder, in forced
dry-run with offline actions — and print one PASS/FAIL line per case, then
`N passed, M failed`. Exit 0 when every case passed, 1 otherwise, 2 on a usage mistake."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from enforcer.cli.repo_check import deployment_actions
from enforcer.cli.rules_args import missing_paths, print_diagnostics
from enforcer.policy.guards import DEFAULT_PROTECTED_NAMESPACES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "test", help="run a policy repository's test cases; prints 'N passed, M failed'",
        description="Replay the events of each case in DIR/tests/*.yaml through DIR's rules "
                    "(after the bundled rules) and policies, plan the responses in forced "
                    "dry-run without touching any process, node or cluster, and compare "
                    "the rule matches and planned actions with the case's 'expect'.")
    p.add_argument("paths", nargs="+", metavar="DIR",
                   help="policy repository (rules/, policies/, tests/), or test files")
    p.add_argument("--enabled-actions", metavar="A,B,...", default=None,
                   help="actions the deployment allows (default: $ENFORCER_ENABLED_ACTIONS)")
    p.add_argument("--disabled-actions", metavar="A,B,...", default=None)
    p.add_argument("--values", action="append", default=[], metavar="VALUES.yaml",
                   help="Helm values of charts/enforcer (actions.*.enabled)")
    p.add_argument("--no-bundled-rules", action="store_true",
                   default=os.environ.get("ENFORCER_BUNDLED_RULES", "").lower()
                   in ("0", "false", "no"),
                   help="do not load the bundled rules first")
    p.add_argument("--protected-namespace", action="append", metavar="NS", default=[],
                   help="namespace the agent never acts in, besides kube-system (repeatable)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="also print what each passing case matched and planned")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from enforcer.gitops.bundle import BundleError, load_bundle
    from enforcer.gitops.cases import load_cases
    from enforcer.gitops.layout import classify, load_paths
    from enforcer.gitops.runner import run_case

    missing = missing_paths(args.paths)
    if missing:
        for path in missing:
            print(f"enforcer test: no such file or directory: {path}", file=sys.stderr)
        return 2
    allowed = deployment_actions(args, "test")
    if isinstance(allowed, int):
        return allowed
    layout = classify(p for p in args.paths if Path(p).is_dir())
    layout.tests += [Path(p) for p in args.paths if Path(p).is_file()]
    if not layout.tests:
        print(f"enforcer test: no test cases: put them in {args.paths[0]}/tests/*.yaml "
              "(see docs/gitops)", file=sys.stderr)
        return 1
    rule_paths, policy_paths = load_paths(layout, bundled_rules=not args.no_bundled_rules)
    try:
        bundle = load_bundle(rule_paths, policy_paths, enabled_actions=allowed)
    except BundleError as exc:
        print_diagnostics(exc.errors, sys.stdout)
        print("the rules and policies do not load (see `enforcer validate`); no case ran",
              file=sys.stderr)
        print(f"0 passed, {max(1, len(exc.errors))} failed")
        return 1
    protected = list(DEFAULT_PROTECTED_NAMESPACES) + list(args.protected_namespace)
    passed = failed = 0
    for path in layout.tests:
        cases, problems = load_cases(path)
        for problem in problems:
            print(f"FAIL {problem}")
            failed += 1
        for case in cases:
            result = run_case(bundle, case, protected_namespaces=protected)
            if result.passed:
                passed += 1
                print(f"PASS {case.where}: {case.name}")
                if args.verbose:
                    _details(result)
                continue
            failed += 1
            print(f"FAIL {case.where}: {case.name}")
            for failure in result.failures:
                print("  " + failure.replace("\n", "\n  "))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def _details(result) -> None:
    print("    rules: " + (", ".join(result.rules) or "none"))
    for step in result.steps:
        print(f"    {step}")
