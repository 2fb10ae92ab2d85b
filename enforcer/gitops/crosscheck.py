"""Checks that need rules and policies together: every rule a policy names exists (and is
enabled), every glob matches a rule, every action is one the deployment allows, and every
`in_kernel` kill is one the kernel can honour exactly."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from enforcer.errors import Diagnostic
from enforcer.policy.in_kernel import check_in_kernel
from enforcer.policy.located import Located, load_located
from enforcer.policy.model import Policy, PolicySet

GLOB_CHARS = "*?["


def crosscheck(ruleset: Any, policies: PolicySet,
               enabled_actions: set[str] | None = None) -> list[Diagnostic]:
    """Every finding, errors and warnings, in file order."""
    found = list(_references(ruleset, policies))
    if enabled_actions is not None:
        found += _disabled_actions(policies, enabled_actions)
    found += check_in_kernel(policies, ruleset)
    return sorted(set(found), key=lambda d: (d.file, d.line, d.column, d.message))


def _references(ruleset: Any, policies: PolicySet) -> Iterator[Diagnostic]:
    names = list(ruleset.rules)
    documents: dict[str, Located | None] = {}
    for policy in policies.policies:
        positions = _rule_positions(policy, documents)
        candidates = []
        for index, pattern in enumerate(policy.match.rules):
            line, col = positions.get(index, (policy.line, 1))
            if any(c in pattern for c in GLOB_CHARS):
                matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
                if not matched:
                    yield Diagnostic(policy.file, line, col,
                                     f"policy {policy.name!r}: rule pattern {pattern!r} "
                                     "matches no loaded rule", severity="warning")
                candidates += matched
                continue
            rule = ruleset.rules.get(pattern)
            if rule is None:
                close = difflib.get_close_matches(pattern, names, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else \
                    " (renamed or removed, or its rules file is not loaded)"
                yield Diagnostic(policy.file, line, col,
                                 f"policy {policy.name!r}: no rule named {pattern!r} is "
                                 f"loaded{hint}")
                continue
            candidates.append(pattern)
            if not rule.enabled and policy.enabled:
                yield Diagnostic(policy.file, line, col,
                                 f"policy {policy.name!r}: rule {pattern!r} is disabled "
                                 "(enabled: false), so this policy never fires for it",
                                 severity="warning")
        if policy.match.tags:
            pool = [ruleset.rules[n] for n in candidates] if policy.match.rules \
                else list(ruleset.rules.values())
            wanted = set(policy.match.tags)
            if pool and not any(wanted <= set(r.tags) for r in pool):
                line, col = positions.get("tags", (policy.line, 1))
                yield Diagnostic(policy.file, line, col,
                                 f"policy {policy.name!r}: no "
                                 f"{'named ' if policy.match.rules else 'loaded '}rule has "
                                 f"all the tags {sorted(wanted)}", severity="warning")


def _disabled_actions(policies: PolicySet, enabled: set[str]) -> Iterator[Diagnostic]:
    allowed = ", ".join(sorted(enabled)) or "none"
    for policy in policies.policies:
        for step in policy.actions:
            if step.name in enabled:
                continue
            yield Diagnostic(
                policy.file, step.line or policy.line, step.column or 1,
                f"policy {policy.name!r}: action {step.name!r} is disabled in this deployment "
                f"(enabled actions: {allowed}); remove it from the policy or enable it in "
                "the chart values",
                severity="error" if policy.enabled else "warning")




def _rule_positions(policy: Policy, documents: dict[str, Located | None]
                    ) -> dict[Any, tuple[int, int]]:
    """Where each entry of the policy's `match.rules` (by index) and `match.tags` is
    written, found by re-reading its file once (a loaded Policy keeps only its own line)."""
    if policy.file not in documents:
        try:
            documents[policy.file] = load_located(
                Path(policy.file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            documents[policy.file] = None
    doc = documents[policy.file]
    if doc is None:
        return {}
    items = doc.data if isinstance(doc.data, list) else []
    for index, item in enumerate(items):
        if doc.where((index,))[0] != policy.line or not isinstance(item, dict):
            continue
        match = item.get("match") if isinstance(item.get("match"), dict) else {}
        out: dict[Any, tuple[int, int]] = {}
        rules = match.get("rules")
        if isinstance(rules, str):
            out[0] = doc.where((index, "match", "rules"))
        elif isinstance(rules, list):
            for j in range(len(rules)):
                out[j] = doc.where((index, "match", "rules", j))
        if "tags" in match:
            out["tags"] = doc.where((index, "match", "tags"))
        return out
    return {}
