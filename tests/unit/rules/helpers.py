"""Small builders for rules tests: a rule file from a condition, an engine, a match."""

from __future__ import annotations

import textwrap

from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_text
from enforcer.rules.ruleset import RuleSet


def rule_yaml(condition: str, name: str = "r", output: str = "out", priority: str = "INFO",
              extra: str = "") -> str:
    cond = condition.replace("\\", "\\\\").replace('"', '\\"')
    return (f'- rule: {name}\n  desc: d\n  condition: "{cond}"\n  output: "{output}"\n'
            f"  priority: {priority}\n  warn_evttypes: false\n{extra}")


def load(text: str) -> RuleSet:
    return load_text(textwrap.dedent(text), "test.yaml")


def matches(condition: str, event: dict, prelude: str = "") -> bool:
    rs = load(textwrap.dedent(prelude) + rule_yaml(condition))
    return bool(Engine(rs, hostname="t").evaluate(event))
