"""The rules (the language, its compiler, the partial evaluation for the kernel) sit below
the sources and the state: they never import from enforcer.sources or enforcer.state, so
that a change to how records are read cannot change what a rule means."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_respond_layers import imports

REPO = Path(__file__).resolve().parents[3]
NOT_FROM_RULES = ("enforcer.sources", "enforcer.state", "enforcer.agent", "enforcer.adapters")


@pytest.mark.parametrize("path", sorted((REPO / "enforcer" / "rules").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_rules_do_not_import_sources_or_state(path: Path) -> None:
    bad = {m for m in imports(path) if m.startswith(NOT_FROM_RULES)}
    assert not bad, f"{path.relative_to(REPO)} imports {bad}"
