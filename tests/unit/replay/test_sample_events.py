"""The bundled sample stream (`enforcer replay policies/samples/events.jsonl`): mostly
benign events plus a small attack story, checked against the bundled upstream stable rules."""

from __future__ import annotations

from pathlib import Path

from tests.unit.clirun import run_cli

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "policies" / "samples" / "events.jsonl"
BUNDLED = REPO / "policies" / "rules" / "falco_rules.yaml"

# In stream order; the nginx worker reading /etc/shadow triggers two rules.
EXPECTED = [
    "Terminal shell in container",
    "Run shell untrusted",
    "Read sensitive file trusted after startup",
    "Read sensitive file untrusted",
    "Contact K8S API Server From Container",
    "Netcat Remote Code Execution in Container",
    "Search Private Keys or Passwords",
    "Clear Log Activities",
]


def test_sample_with_bundled_rules() -> None:
    result = run_cli("replay", SAMPLE, "--rules", BUNDLED)
    assert result.code == 0, result.stderr
    assert [a["rule"] for a in result.alerts()] == EXPECTED
    assert f"Events detected: {len(EXPECTED)}\n" in result.stderr


def test_sample_as_run_sh_replays_it() -> None:
    """run.sh calls `enforcer replay policies/samples/events.jsonl` with the default rules."""
    result = run_cli("replay", SAMPLE)
    assert result.code == 0, result.stderr
    assert [a["rule"] for a in result.alerts()] == EXPECTED
