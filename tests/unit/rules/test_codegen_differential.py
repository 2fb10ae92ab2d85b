"""The generated per-event-type code (with evt.type folding and shared-macro caching)
agrees with a plain tree walk on random rule sets and events."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enforcer.rules.engine import Engine
from enforcer.rules.evaluate import rule_matches
from enforcer.rules.loader import load_text

CHECKS = [
    "evt.type = open", "evt.type = execve", "evt.type in (open, connect)",
    "evt.type != execve", "evt.type in (execve)", "proc.name = a", "proc.name in (a, b)",
    "proc.name != b", "proc.name startswith a", "proc.name exists", "fd.num > 2",
    "fd.num = 3", "fd.name pmatch (/etc)", "fd.name contains tc", "proc.aname = a",
    "proc.aname[1] = b", "tolower(proc.name) = a", "proc.name = val(proc.pname)",
    "proc.name startswith oneof (a, A)", "proc.name != allof (a, b)",
    "evt.type = anyof (open, close)",
]
SCALE = int(os.environ.get("ENFORCER_FUZZ_SCALE", "1"))
TYPES = ["open", "execve", "connect", "close"]


@st.composite
def expressions(draw, depth=3):
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(CHECKS + ["m1", "m2", "m3"]))
    kind = draw(st.sampled_from(["and", "or", "not"]))
    if kind == "not":
        return f"not ({draw(expressions(depth - 1))})"
    parts = draw(st.lists(expressions(depth - 1), min_size=2, max_size=3))
    return "(" + f" {kind} ".join(parts) + ")"


@st.composite
def events(draw):
    ev = {}
    if draw(st.booleans()):
        ev["evt.type"] = draw(st.sampled_from(TYPES))
    for key, values in (("proc.name", ["a", "b", "A", "c"]), ("proc.pname", ["a", "b"]),
                        ("fd.num", [1, 3, 5]), ("fd.name", ["/etc/x", "/etcx", "/tmp"]),
                        ("proc.aname", [["a"], ["b", "a"], []])):
        if draw(st.booleans()):
            ev[key] = draw(st.sampled_from(values))
    return ev


@settings(max_examples=120 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(expressions(), min_size=3, max_size=3), st.lists(expressions(), min_size=1,
       max_size=5), st.lists(events(), min_size=1, max_size=8))
def test_generated_code_matches_tree_walk(macros, rule_conds, evs):
    # macros may only use earlier macros: forward references become a plain check
    lines = []
    for i, m in enumerate(macros, 1):
        for j in range(i, 4):
            m = m.replace(f"m{j}", "proc.name = a")
        lines.append(f"- macro: m{i}\n  condition: {m}\n")
    text = "".join(lines)
    for n, c in enumerate(rule_conds):
        text += (f"- rule: r{n}\n  desc: d\n  condition: {c}\n  output: o\n"
                 "  priority: INFO\n  warn_evttypes: false\n")
    ruleset = load_text(text, "diff.yaml")
    engine = Engine(ruleset, hostname="h")
    for ev in evs:
        got = [r.name for r in engine.matching_rules(ev)]
        want = [r.name for r in engine.rules if rule_matches(r, ev)]
        assert got == want, (ev, [str(r.expr) for r in engine.rules])


def test_upstream_rules_agree_with_tree_walk_on_a_mixed_stream():
    import importlib.util
    from pathlib import Path

    from enforcer.rules.loader import load_rules

    here = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("bench_rules",
                                                  here / "bench" / "bench_rules.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = here / "data" / "falco-rules"
    ruleset = load_rules([data / "falco_rules.yaml", data / "falco-incubating_rules.yaml",
                          data / "falco-sandbox_rules.yaml"])
    engine = Engine(ruleset, hostname="h")
    hits = 0
    for ev in bench.make_events(3000, seed=11):
        got = [r.name for r in engine.matching_rules(ev)]
        want = [r.name for r in engine.rules if rule_matches(r, ev)]
        assert got == want, ev
        hits += len(got)
    assert hits > 0
    assert not engine.evaluation_errors
