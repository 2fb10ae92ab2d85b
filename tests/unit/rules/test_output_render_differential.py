"""The generated output renderer gives exactly what a plain walk over the output's parts
gives (access.render for the text, the JSON-able value for output_fields, in field order),
for every output of the three upstream rule files and events whose values take every
shape an event may hold (missing, str, str subclass, int, bool, list, tuple, bytes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enforcer.rules import access
from enforcer.rules.loader import load_rules
from enforcer.rules.output import Renderer, compile_output

DATA = Path(__file__).resolve().parents[2] / "data" / "falco-rules"
FILES = ("falco_rules.yaml", "falco-incubating_rules.yaml", "falco-sandbox_rules.yaml")


class Named(str):
    """A str subclass (an event may hand one out): rendered as its text."""


def reference(fmt: Any, event: Any) -> tuple[str, dict[str, Any]]:
    """The renderer as a plain walk: the behaviour the generated one must keep."""
    values = {}
    for f in fmt.fields:
        g = access.getter(f) if not access.is_ancestor_any(f) else access.getter(
            type(f)(f.name, "0", f.pos))
        values[f.key] = g(event)
    text = "".join(p if isinstance(p, str) else access.render(values[p.key])
                   for p in fmt.parts)

    def jsonable(v: Any) -> Any:
        if isinstance(v, bytes):
            return v.decode("utf-8", "replace")
        return list(v) if isinstance(v, tuple) else v
    return text, {k: jsonable(v) for k, v in values.items()}


def _outputs() -> list[Any]:
    ruleset = load_rules([str(DATA / name) for name in FILES])
    seen: dict[str, Any] = {}
    for rule in ruleset.rules.values():
        if rule.output_format is not None:
            seen.setdefault(rule.output_format.text, rule.output_format)
    return list(seen.values())


OUTPUTS = _outputs()
VALUES = st.one_of(
    st.none(), st.text(max_size=6), st.text(max_size=6).map(Named), st.integers(-5, 70000),
    st.booleans(), st.binary(max_size=6), st.lists(st.text(max_size=3), max_size=3),
    st.tuples(st.integers(0, 9), st.text(max_size=2)),
    st.lists(st.one_of(st.none(), st.booleans(), st.integers(0, 9)), max_size=3))


def test_upstream_outputs_are_many() -> None:
    assert len(OUTPUTS) > 80


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(OUTPUTS), st.data())
def test_generated_renderer_matches_plain_walk(fmt: Any, data: Any) -> None:
    event: dict[str, Any] = {}
    for f in fmt.fields:
        for key in (f.key, f.name, f"{f.name}.{f.arg}" if f.arg else f.name):
            if data.draw(st.booleans()):
                event[key] = data.draw(VALUES)
    got = Renderer(fmt).render(event)
    want = reference(fmt, event)
    assert got == want
    assert [type(v) for v in got[1].values()] == [type(v) for v in want[1].values()]
    assert list(got[1]) == list(want[1])


@pytest.mark.parametrize("text", [
    "", "no fields at all", "%proc.name", "a %proc.name b %proc.name c",
    "q='%fd.name' \\ %evt.arg[name] {x} %proc.aname %proc.aname[2] 100%",
])
def test_edge_formats(text: str) -> None:
    fmt = compile_output(text)
    for event in ({}, {"proc.name": "x'y\"", "fd.name": b"\xff/etc", "proc.aname": ["p", "q"],
                       "evt.arg.name": ("a", 1), "proc.aname[2]": None}):
        assert Renderer(fmt).render(event) == reference(fmt, event)
