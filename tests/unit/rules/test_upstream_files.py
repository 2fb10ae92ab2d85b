"""The upstream Falco rule files load unchanged, alone and together, with the counts that
an independent scan of the YAML gives."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_rules

DATA = Path(__file__).resolve().parents[2] / "data" / "falco-rules"
STABLE = DATA / "falco_rules.yaml"
INCUBATING = DATA / "falco-incubating_rules.yaml"
SANDBOX = DATA / "falco-sandbox_rules.yaml"


def scan_counts(paths: list[Path]) -> dict[str, int]:
    """Count distinct names straight from the YAML; a rule's final `enabled` wins."""
    rules: dict[str, bool] = {}
    macros: set[str] = set()
    lists: set[str] = set()
    for path in paths:
        for item in yaml.safe_load(path.read_text()) or []:
            if "rule" in item:
                if "condition" in item and "output" in item and not item.get("append"):
                    rules[item["rule"]] = item.get("enabled", True)
                elif "enabled" in item:
                    rules[item["rule"]] = item["enabled"]
            elif "macro" in item:
                macros.add(item["macro"])
            elif "list" in item:
                lists.add(item["list"])
    return {"rules": len(rules), "macros": len(macros), "lists": len(lists),
            "enabled": sum(rules.values())}


CASES = {
    "stable": [STABLE],
    "incubating": [INCUBATING],
    "sandbox": [SANDBOX],
    "all three": [STABLE, INCUBATING, SANDBOX],
}


@pytest.mark.parametrize("paths", CASES.values(), ids=CASES.keys())
def test_upstream_files_load_with_matching_counts(paths):
    ruleset = load_rules(paths)
    assert ruleset.counts() == scan_counts(paths)


def test_scan_agrees_with_published_figures():
    # the figures published with the test data (README beside the files)
    assert scan_counts([STABLE]) == {"rules": 25, "macros": 87, "lists": 49, "enabled": 25}
    assert scan_counts(CASES["all three"]) == {"rules": 93, "macros": 315, "lists": 118,
                                               "enabled": 81}


def test_directory_loads_files_sorted_by_name():
    ruleset = load_rules([DATA])  # falco-incubating, falco-sandbox, falco_rules
    assert ruleset.counts()["rules"] == 93
    assert ruleset.files == [str(INCUBATING), str(SANDBOX), str(STABLE)]


def test_every_enabled_upstream_rule_compiles_and_indexes_event_types():
    ruleset = load_rules(CASES["all three"])
    engine = Engine(ruleset, hostname="h")
    for rule in engine.rules:
        assert rule.event_types is None or rule.event_types, rule.name
    types = engine.event_types()
    assert types is not None and {"execve", "openat", "connect"} <= types
    # an event of a type no rule names runs no rule and raises nothing
    assert engine.evaluate({"evt.type": "getpid"}) == []
    assert not engine.evaluation_errors


@pytest.mark.parametrize("paths", CASES.values(), ids=CASES.keys())
def test_upstream_files_load_without_warnings(paths):
    # the upstream repository keeps its files warning-free under Falco's own loader
    assert [str(w) for w in load_rules(paths).warnings] == []
