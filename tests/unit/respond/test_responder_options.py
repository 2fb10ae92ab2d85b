"""The options the live agent and replay add for responses."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from enforcer.errors import PolicyError
from enforcer.respond.options import AuditLogError, add_arguments, responder_from_args


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_load_the_bundled_dry_run_policies(tmp_path: Path) -> None:
    args = parse(["--audit-log", str(tmp_path / "a.jsonl")])
    responder = responder_from_args(args)
    assert responder.policies.policies and all(p.dry_run for p in responder.policies.policies)
    assert responder.dry_run is False
    assert "kube-system" in responder.guards.protected


def test_policies_replace_the_bundled_ones(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "node-a")
    path = tmp_path / "mine.yaml"
    path.write_text("- policy: mine\n  match: {rules: [x]}\n  actions: [kill]\n"
                    "  dry_run: false\n")
    args = parse(["--policies", str(path), "--dry-run", "--protected-namespace", "payments",
                  "--breaker-workloads", "3", "--breaker-window", "2m",
                  "--audit-log", str(tmp_path / "a.jsonl")])
    responder = responder_from_args(args)
    assert [p.name for p in responder.policies.policies] == ["mine"]
    assert responder.dry_run is True
    assert {"kube-system", "payments"} <= responder.guards.protected
    assert responder.node_name == "node-a"
    assert (responder.blast_radius.defaults.workloads,
            responder.blast_radius.defaults.window) == (3, 120)


def test_bad_policies_raise_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- policy: x\n  match: {rules: [x]}\n  actions: [nuke]\n")
    with pytest.raises(PolicyError, match=r"bad.yaml:3:13: unknown action 'nuke'"):
        responder_from_args(parse(["--policies", str(path), "--audit-log",
                                   str(tmp_path / "a.jsonl")]))


def test_an_existing_dry_run_flag_is_shared(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dry-run", action="store_true", help="the agent's own")
    add_arguments(parser)
    args = parser.parse_args(["--dry-run", "--audit-log", str(tmp_path / "a.jsonl")])
    assert responder_from_args(args).dry_run is True


def test_an_unwritable_audit_log_is_an_environment_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = parse(["--audit-log", str(blocker / "audit.jsonl")])
    with pytest.raises(AuditLogError, match="cannot open the audit log") as caught:
        responder_from_args(args)
    assert caught.value.exit_code == 3


def test_the_deprecated_action_budget_is_ignored_with_a_warning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from enforcer.respond.options import breaker_defaults, deprecation_warnings

    monkeypatch.delenv("ENFORCER_ACTION_BUDGET", raising=False)
    assert deprecation_warnings(parse([])) == []
    args = parse(["--action-budget", "3"])
    (warning,) = deprecation_warnings(args)
    assert "deprecated and ignored" in warning and "--breaker-workloads" in warning
    assert breaker_defaults(args) == breaker_defaults(parse([]))  # no effect on limits
    monkeypatch.setenv("ENFORCER_ACTION_BUDGET", "20")
    assert deprecation_warnings(parse([]))
