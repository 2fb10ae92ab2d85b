"""Enabling and disabling loaded rules by name or tag, as Falco's configuration does
(`rules: [{disable: {rule: "Write below *"}}, {enable: {tag: network}}]`).

Names match exactly, or as wildcards where only `*` is special and the whole name must
match (`a*b` matches "a new b", not "a new b yes"). Tags select rules having any of them.
Selections apply in order; each returns a new RuleSet and leaves the original unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from functools import lru_cache

from enforcer.priority import Priority
from enforcer.rules.ruleset import RuleSet


@lru_cache(maxsize=256)
def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if part.startswith("*") else re.escape(part)
                              for part in re.split(r"(\*+)", pattern) if part), re.DOTALL)


def name_matches(pattern: str, name: str) -> bool:
    """Exact match, or a whole-name wildcard match when the pattern contains `*`."""
    if "*" not in pattern:
        return pattern == name
    return _wildcard(pattern).fullmatch(name) is not None


def set_enabled(ruleset: RuleSet, enabled: bool, names: Iterable[str] = (),
                tags: Iterable[str] = ()) -> RuleSet:
    """A copy of `ruleset` where rules matching any name pattern or having any of the tags
    are enabled (or disabled)."""
    names = list(names)
    tagset = set(tags)
    rules = {}
    for key, rule in ruleset.rules.items():
        hit = any(name_matches(p, rule.name) for p in names) or bool(tagset & set(rule.tags))
        rules[key] = replace(rule, enabled=enabled) if hit else rule
    return replace(ruleset, rules=rules)


def at_least(ruleset: RuleSet, minimum: Priority) -> RuleSet:
    """A copy where rules less severe than `minimum` are disabled (Falco's `priority`)."""
    rules = {k: (r if r.priority.at_least(minimum) else replace(r, enabled=False))
             for k, r in ruleset.rules.items()}
    return replace(ruleset, rules=rules)
