"""The field registry: every field typed and described; the upstream files' fields all
present; families and arguments checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.rules import fields
from enforcer.rules.checks import used_fields
from enforcer.rules.loader import load_rules
from enforcer.rules.output import compile_output

DATA = Path(__file__).resolve().parents[2] / "data" / "falco-rules"


def test_every_field_has_a_type_and_a_one_line_description():
    names = [f.name for f in fields.all_fields()]
    assert len(names) == len(set(names))
    for f in fields.all_fields():
        assert f.type in fields.TYPES, f
        assert f.desc and "\n" not in f.desc, f
        assert f.arg in (None, "index", "name", "key"), f


def test_upstream_files_use_only_registered_fields():
    ruleset = load_rules(sorted(DATA.glob("*.yaml")))
    used = set()
    for rule in ruleset.rules.values():
        used |= {f.name for f in used_fields(rule.expr)}
        used |= {f.name for f in compile_output(rule.output).fields}
    assert used and all(fields.lookup(name) for name in used)
    assert {"proc.aname", "fd.snet", "evt.buffer", "container.mount.dest"} <= used


@pytest.mark.parametrize("name, arg, ok", [
    ("proc.name", None, True), ("proc.colour", None, False), ("evt.arg.flags", None, True),
    ("evt.arg", "0", True), ("evt.arg", "flags", True), ("evt.arg", None, False),
    ("evt.rawarg.res", None, True), ("evt.arg.flags", "x", False), ("proc.aname", "2", True),
    ("proc.aname", None, True), ("proc.aname", "x", False), ("proc.name", "1", False),
    ("container.mount.dest", "/proc*", True), ("container.mount.dest", None, False),
])
def test_field_references(name, arg, ok):
    assert (fields.check(name, arg) is None) is ok
