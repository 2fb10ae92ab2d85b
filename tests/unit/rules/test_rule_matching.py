"""Falco's `rule_matching` strategy (§85): `all` reports every matching rule, `first` stops
at the first matching rule in rule order."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_rules

from .helpers import load, rule_yaml

REPO = Path(__file__).resolve().parents[3]
STABLE = REPO / "tests" / "data" / "falco-rules" / "falco_rules.yaml"

RULES = (rule_yaml("evt.type = open and proc.name = cat", name="open by cat")
         + rule_yaml("proc.name = cat", name="any cat")
         + rule_yaml("evt.type = open", name="any open"))


def names(engine: Engine, event: dict) -> list[str]:
    return [a.rule for a in engine.evaluate(event)]


@pytest.fixture(scope="module")
def engines():
    rs = load(RULES)
    return Engine(rs, hostname="t"), Engine(rs, hostname="t", rule_matching="first")


@pytest.mark.parametrize("event, every", [
    ({"evt.type": "open", "proc.name": "cat"}, ["open by cat", "any cat", "any open"]),
    ({"evt.type": "open", "proc.name": "ls"}, ["any open"]),
    ({"evt.type": "execve", "proc.name": "cat"}, ["any cat"]),
    ({"evt.type": "execve", "proc.name": "ls"}, []),
])
def test_first_reports_only_the_first_match_in_rule_order(engines, event, every):
    all_engine, first_engine = engines
    assert names(all_engine, event) == every
    assert names(first_engine, event) == every[:1]
    assert [r.name for r in first_engine.matching_rules(event)] == every[:1]


def test_default_is_all():
    assert Engine(load(RULES), hostname="t").rule_matching == "all"


def test_a_rule_failing_on_a_bad_value_does_not_stop_first():
    rs = load(rule_yaml("proc.pid > 5", name="pid") + rule_yaml("proc.name = cat", name="cat"))
    engine = Engine(rs, hostname="t", rule_matching="first")
    assert names(engine, {"evt.type": "open", "proc.pid": "x", "proc.name": "cat"}) == ["cat"]
    assert engine.evaluation_errors["pid"] == 1


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="rule_matching"):
        Engine(load(RULES), hostname="t", rule_matching="some")


def _bench_events(n: int) -> list[dict]:
    spec = importlib.util.spec_from_file_location(
        "bench_rules", REPO / "tests" / "bench" / "bench_rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_events(n, seed=11)


def test_first_is_the_head_of_all_on_the_stable_rules():
    rs = load_rules([STABLE])
    every = Engine(rs, hostname="t")
    first = Engine(rs, hostname="t", rule_matching="first")
    multi = 0
    for event in _bench_events(3000):
        expected = names(every, event)
        multi += len(expected) > 1
        assert names(first, event) == expected[:1], event
    assert multi > 0  # the stream has events several stable rules match
