"""What `enforcer validate` needs for policy files: load them, check in_kernel eligibility
against the loaded rules, and summarise."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from enforcer.errors import Diagnostic
from enforcer.policy.in_kernel import check_in_kernel
from enforcer.policy.loader import policy_files, validate_policy_files


def looks_like_policy_file(path: str | Path) -> bool:
    """True when the file's first item is a `policy:` mapping (rules files start with
    rule/macro/list/required_engine_version items)."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                stripped = line.strip()
                if not stripped or stripped.startswith("#"):
                    continue
                return stripped.startswith("- policy:")
    except OSError:
        return False
    return False


def split_paths(paths: Iterable[str | Path]) -> tuple[list[str], list[str]]:
    """(rule paths, policy files) for `enforcer validate FILE|DIR...`: directories are
    expanded to their *.yaml files, each file goes where its first item says."""
    rules: list[str] = []
    policies: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            (policies if looks_like_policy_file(path) else rules).append(str(raw))
            continue
        for item in policy_files([path]):
            (policies if looks_like_policy_file(item) else rules).append(str(item))
    return rules, policies


def validate_policies(paths: Iterable[str | Path], ruleset: Any = None
                      ) -> tuple[str, list[Diagnostic]]:
    """("N policies, M actions" summary, diagnostics sorted by place). Errors have
    severity "error"; in_kernel refusals are errors too (the policy asks for something the
    agent will not do)."""
    policy_set, diagnostics = validate_policy_files(paths)
    diagnostics += check_in_kernel(policy_set, ruleset)
    counts = policy_set.counts()
    summary = f"{counts['policies']} policies, {counts['actions']} actions"
    return summary, sorted(diagnostics, key=lambda d: (d.file, d.line, d.column))

