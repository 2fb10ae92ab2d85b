"""Enabling/disabling rules by name, wildcard and tag; minimum priority (§79-§83)."""

from __future__ import annotations

import pytest

from enforcer.priority import Priority
from enforcer.rules.selection import at_least, name_matches, set_enabled

from .helpers import load, rule_yaml


@pytest.mark.parametrize("pattern, name, expected", [
    ("*", "anything", True), ("*", "", True), ("a*b", "a new b", True),
    ("a*b", "a new b yes", False), ("*x*y", "..x..y", True), ("a**b", "a new b", True),
    ("test", "test rule", False), ("test rule", "test rule", True), ("", "", True),
    ("", "x", False), ("a.b", "axb", False),
])
def test_name_matching(pattern, name, expected):
    assert name_matches(pattern, name) is expected


def ruleset():
    return load(rule_yaml("evt.type = open", name="shell one", priority="WARNING",
                          extra="  tags: [exec process, a]\n  enabled: false\n") +
                rule_yaml("evt.type = open", name="other", priority="DEBUG",
                          extra="  tags: [b]\n"))


def test_enable_by_tag_and_disable_by_wildcard():
    rs = ruleset()
    on = set_enabled(rs, True, tags=["exec process"])
    assert on.rules["shell one"].enabled and not rs.rules["shell one"].enabled
    off = set_enabled(on, False, names=["*one"])
    assert not off.rules["shell one"].enabled and off.rules["other"].enabled
    assert set_enabled(rs, False, names=["unknown"]).rules == rs.rules


def test_minimum_priority():
    rs = at_least(set_enabled(ruleset(), True, names=["*"]), Priority.WARNING)
    assert rs.rules["shell one"].enabled and not rs.rules["other"].enabled
    assert rs.counts()["enabled"] == 1
