"""Only adapters import third-party clients (kubernetes, pyroute2, bcc, urllib3, boto3); actions
never import from the policy/respond layers above them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLIENTS = ("kubernetes", "pyroute2", "bcc", "urllib3", "boto3", "botocore")
ABOVE_ACTIONS = ("enforcer.policy", "enforcer.respond", "enforcer.cli", "enforcer.agent")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


SOURCES = sorted(p for d in ("actions", "enforcer/policy", "enforcer/respond", "enforcer/audit")
                 for p in (REPO / d).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_third_party_clients_outside_adapters(path: Path) -> None:
    bad = {m for m in imports(path) if m.split(".")[0] in CLIENTS}
    assert not bad, f"{path.relative_to(REPO)} imports {bad}; go through enforcer.adapters"


@pytest.mark.parametrize("path", sorted((REPO / "actions").rglob("*.py")),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_actions_do_not_import_upward(path: Path) -> None:
    bad = {m for m in imports(path) if m.startswith(ABOVE_ACTIONS)}
    assert not bad, f"{path.relative_to(REPO)} imports {bad} from a layer above actions"
