"""Property test: mutated conditions and rule files either load or fail with located
diagnostics (FILE:LINE:COL) — never any other exception."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enforcer.errors import RuleError
from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_text

# ENFORCER_FUZZ_SCALE=20 runs twenty times more examples (a longer local hunt).
SCALE = int(os.environ.get("ENFORCER_FUZZ_SCALE", "1"))
STABLE = Path(__file__).resolve().parents[2] / "data" / "falco-rules" / "falco_rules.yaml"
STABLE_TEXT = STABLE.read_text()

TOKENS = ["proc.name", "fd.name", "evt.type", "proc.aname[2]", "evt.arg.flags", "fd.num",
          "evt.buffer", "fd.sip", "fd.snet", "=", "!=", "<", ">=", "contains", "in",
          "pmatch", "glob", "exists", "regex", "bcontains", "and", "or", "not", "(", ")",
          ",", "'x y'", '"q"', "bash", "/etc", "0x1F", "-1", "true", "tolower(", "val(",
          "my_macro", "my_list", "[", "]", "\\", "\n", "  ", "%", "'", '"', "\x00", "é",
          "oneof", "anyof", "allof", "val(proc.pname)", ")"]

PRELUDE = ("- list: my_list\n  items: [a, 'b c']\n"
           "- macro: my_macro\n  condition: proc.name in (my_list)\n")


def check_outcome(text: str) -> None:
    try:
        ruleset = load_text(text, "fuzz.yaml")
    except RuleError as exc:
        assert exc.diagnostics
        for d in exc.diagnostics:
            assert d.file == "fuzz.yaml"
            assert d.line >= 1 and d.column >= 1, d
            assert d.message
        return
    engine = Engine(ruleset, hostname="h")
    engine.evaluate({"evt.type": "openat", "proc.name": "a", "fd.name": "/etc/x"})


def rule_with(condition: str) -> str:
    quoted = condition.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return (PRELUDE + f'- rule: r\n  desc: d\n  condition: "{quoted}"\n'
            "  output: o %proc.name\n  priority: INFO\n")


@settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=14))
def test_token_soup_conditions(tokens):
    check_outcome(rule_with(" ".join(tokens)))


@settings(max_examples=200 * SCALE, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_arbitrary_text_conditions(text):
    check_outcome(rule_with(text))


@settings(max_examples=40 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(STABLE_TEXT) - 1),
       st.integers(min_value=1, max_value=30),
       st.sampled_from(["", "(", ")", ":", "- ", "\n", " and ", "%", "'", "[", "rule: x\n",
                        "  override:\n    condition: append\n", "append: true"]))
def test_mutated_upstream_file(at, length, insert):
    check_outcome(STABLE_TEXT[:at] + insert + STABLE_TEXT[at + length:])


@settings(max_examples=150 * SCALE, deadline=None)
@given(st.lists(st.sampled_from([
    "- rule: r\n", "- macro: m\n", "- list: l\n", "  desc: d\n", "  condition: a.b = 1\n",
    "  condition: proc.name = x\n", "  condition: m\n", "  output: o\n", "  priority: INFO\n",
    "  items: [a]\n", "  items: x\n", "  append: true\n", "  override:\n",
    "    condition: append\n", "    items: replace\n", "  enabled: false\n",
    "  exceptions:\n", "    - name: e\n", "      fields: [proc.name]\n",
    "      values: [[a]]\n", "      comps: [in]\n", "  tags: [a]\n",
    "- required_engine_version: 9\n",
    "- 3\n", "key: value\n", "  source: k8s\n", "---\n",
]), min_size=1, max_size=16))
def test_shuffled_rule_file_lines(lines):
    check_outcome("".join(lines))
