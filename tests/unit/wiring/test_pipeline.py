"""The agent's pipeline in-process (no eBPF): one event is judged by one set's rules and
answered by that same set's policies, through a hot reload; a reload whose rules need probes
the agent did not attach is said loudly; the alert, audit record and readiness agree."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from enforcer.cli.agent_wiring import WiringError, build_pipeline
from enforcer.cli.main import build_parser

RULES = """\
- rule: Tmp marker opened
  desc: test rule
  condition: evt.type in (open, openat) and fd.name = /tmp/marker
  output: marker opened by %proc.name (file=%fd.name)
  priority: WARNING
"""
RULES_V2 = RULES + """\
- rule: Directory made
  desc: a rule on a syscall the running probes may not watch
  condition: evt.type = mkdirat and fd.name = /tmp/newdir
  output: mkdir %fd.name
  priority: NOTICE
"""


def policy(name: str, signal: str = "KILL") -> str:
    return (f"- policy: {name}\n  match: {{rules: [Tmp marker opened]}}\n"
            f"  actions: [{{kill: {{signal: {signal}}}}}]\n  dry_run: true\n")


EVENT = {"evt.type": "openat", "fd.name": "/tmp/marker", "proc.name": "cat",
         "evt.time": 1_700_000_000_000_000_000}


@pytest.fixture
def made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "ENFORCER_HTTP_ADDR",
                 "ENFORCER_ENABLED_ACTIONS", "NODE_NAME"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULES)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(policy("first"))
    audit = tmp_path / "audit.jsonl"
    args = build_parser().parse_args([
        "--dry-run", "--rules", str(tmp_path / "rules"), "--policies",
        str(tmp_path / "policies"), "--audit-log", str(audit), "--http-addr", "off",
        "--reload-interval", "0", "--node-name", "node-x"])
    out, err = io.StringIO(), io.StringIO()
    pipeline = build_pipeline(args, stdout=out, stderr=err)
    pipeline.start()
    yield pipeline, tmp_path, audit, out, err
    pipeline.stop()


def records(audit: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in audit.read_text().splitlines()]


def answered(pipeline: Any, audit: Path) -> list[dict[str, Any]]:
    (alert,) = pipeline.evaluate(dict(EVENT))
    pipeline.publish(alert)
    pipeline.responder.drain()
    assert alert.trace_id
    return [r for r in records(audit) if r.get("trace_id") == alert.trace_id]


def test_an_event_is_answered_by_the_policies_of_the_set_that_judged_it(made: Any) -> None:
    pipeline, tmp, audit, out, err = made
    first = pipeline.active.short_digest
    recs = answered(pipeline, audit)
    assert {r["policy_digest"] for r in recs} == {first}
    assert next(r for r in recs if r["kind"] == "decision")["policy"] == "first"
    assert pipeline.responder.node_name == "node-x"

    (tmp / "policies" / "p.yaml").write_text(policy("second", "TERM"))
    assert pipeline.reloader.check() == "swapped"
    second = pipeline.active.short_digest
    assert second != first and pipeline.responder.policy_digest == second
    recs = answered(pipeline, audit)
    assert {r["policy_digest"] for r in recs} == {second}
    assert next(r for r in recs if r["kind"] == "decision")["policy"] == "second"
    reload = [r for r in records(audit) if r["kind"] == "reload"]
    assert [r["outcome"] for r in reload] == ["applied"]
    assert pipeline.metrics.registry.get_sample_value(
        "enforcer_policy_reloads_total", {"result": "success"}) == 1  # hot reloads only


def test_a_broken_update_keeps_the_last_good_set_and_says_so(made: Any) -> None:
    pipeline, tmp, audit, out, err = made
    good = pipeline.active.short_digest
    (tmp / "policies" / "p.yaml").write_text("- policy: broken\n  actions: [{kill: {x: 1}}]\n")
    assert pipeline.reloader.check() == "failed"
    assert pipeline.active.short_digest == good
    assert "update refused" in err.getvalue()
    (failed,) = [r for r in records(audit) if r["kind"] == "reload"]
    assert failed["outcome"] == "failed" and failed["detail"]["file"].endswith("p.yaml")
    assert {r["policy_digest"] for r in answered(pipeline, audit)} == {good}
    assert pipeline.metrics.registry.get_sample_value(
        "enforcer_policy_reloads_total", {"result": "failure"}) == 1
    deadline = time.monotonic() + 5
    while "Enforcer policy reload failed" not in out.getvalue():
        assert time.monotonic() < deadline, out.getvalue()
        time.sleep(0.02)


def test_rules_that_need_unattached_probes_are_reported_not_silent(made: Any) -> None:
    pipeline, tmp, audit, out, err = made
    seen: list[Any] = []

    def gaps(new: Any) -> list[str]:
        seen.append(new)
        return ["syscalls not attached: mkdirat"] if "mkdirat" in (
            new.engine.event_types() or ()) else []

    pipeline.on_rules_changed = gaps
    (tmp / "rules" / "r.yaml").write_text(RULES_V2)
    assert pipeline.reloader.check() == "swapped"
    assert seen and "restart the agent" in err.getvalue()
    warnings = pipeline.readiness.snapshot()["warnings"]
    assert "mkdirat" in warnings["attachment"]
    deadline = time.monotonic() + 5
    while "Enforcer reload needs a restart" not in out.getvalue():
        assert time.monotonic() < deadline, out.getvalue()
        time.sleep(0.02)
    # the new set is active all the same: the rules that can fire do
    assert "Directory made" in pipeline.active.ruleset.rules


def test_bad_deployment_settings_are_usage_errors(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENFORCER_ENABLED_ACTIONS", "kill,teleport")
    args = build_parser().parse_args(["--audit-log", str(tmp_path / "a.jsonl")])
    with pytest.raises(WiringError) as info:
        build_pipeline(args)
    assert info.value.exit_code == 2 and "teleport" in str(info.value)


def test_the_console_off_loopback_needs_a_token(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from enforcer.cli.agent_wiring import start_http  # noqa: PLC0415

    monkeypatch.delenv("ENFORCER_UI_TOKEN", raising=False)
    args = build_parser().parse_args([
        "--audit-log", str(tmp_path / "a.jsonl"), "--http-addr", "0.0.0.0:0", "--ui",
        "--store", str(tmp_path / "s.db"), "--reload-interval", "0"])
    pipeline = build_pipeline(args, stdout=io.StringIO(), stderr=io.StringIO())
    try:
        with pytest.raises(WiringError) as info:
            start_http(args, pipeline)
        assert info.value.exit_code == 2 and "without a token" in str(info.value)
        monkeypatch.setenv("ENFORCER_UI_TOKEN", "s3cret")
        start_http(args, pipeline)
        assert pipeline.http is not None and pipeline.http.port > 0
    finally:
        pipeline.stop()


def test_a_set_that_does_not_load_stops_the_start_with_file_line_col(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENFORCER_ENABLED_ACTIONS", raising=False)
    bad = tmp_path / "p.yaml"
    bad.write_text("- policy: x\n  match: {rules: [Tmp marker opened]}\n"
                   "  actions: [{kill: {signal: KILL, nope: 1}}]\n")
    rules = tmp_path / "r.yaml"
    rules.write_text(RULES)
    args = build_parser().parse_args(["--rules", str(rules), "--policies", str(bad),
                                      "--audit-log", str(tmp_path / "a.jsonl")])
    with pytest.raises(WiringError) as info:
        build_pipeline(args)
    assert info.value.exit_code == 1
    assert f"{bad}:3:" in str(info.value) and "nope" in str(info.value)


def test_rule_selection_flags_hold_for_the_first_set_and_every_reload(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENFORCER_ENABLED_ACTIONS", raising=False)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULES)
    (tmp_path / "p.yaml").write_text(policy("first"))
    args = build_parser().parse_args([
        "--dry-run", "--rules", str(tmp_path / "rules"), "--policies", str(tmp_path / "p.yaml"),
        "--audit-log", str(tmp_path / "a.jsonl"), "--http-addr", "off",
        "--reload-interval", "0", "--min-priority", "error"])
    pipeline = build_pipeline(args, stdout=io.StringIO(), stderr=io.StringIO())
    try:
        assert pipeline.evaluate(dict(EVENT)) == []  # WARNING < error: disabled
        (tmp_path / "rules" / "r.yaml").write_text(RULES.replace("WARNING", "CRITICAL"))
        assert pipeline.reloader.check() == "swapped"
        assert [a.rule for a in pipeline.evaluate(dict(EVENT))] == ["Tmp marker opened"]
    finally:
        pipeline.stop()
