"""The tolerant mapping from audit records to store rows."""

from __future__ import annotations

import pytest

from enforcer.alert import Alert
from enforcer.priority import Priority
from enforcer.store.mapping import (
    ACTION,
    ALERT,
    DECISION,
    RecordError,
    alert_record,
    map_record,
    outcome_class,
    parse_time_ns,
    response_view,
)


@pytest.mark.parametrize("value, expected", [
    ("2026-11-23T10:00:00.123456789Z", 1_795_428_000_123_456_789),
    ("2026-11-23T10:00:00Z", 1_795_428_000_000_000_000),
    ("2026-11-23T11:00:00.5+01:00", 1_795_428_000_500_000_000),
    (1_795_428_000, 1_795_428_000_000_000_000),
    (1_795_428_000.25, 1_795_428_000_250_000_000),
    (1_795_428_000_123, 1_795_428_000_123_000_000),
    (1_795_428_000_123_456_789, 1_795_428_000_123_456_789),
    ("1795428000", 1_795_428_000_000_000_000),
    ("yesterday", None), (None, None), (True, None),
])
def test_parse_time(value, expected):
    assert parse_time_ns(value) == expected


@pytest.mark.parametrize("raw, dry_run, kind, expected", [
    ("done", False, ACTION, "done"), ("noop", None, ACTION, "done"),
    ("done", True, ACTION, "dry-run"), ("dry_run", True, ACTION, "dry-run"),
    (None, True, ACTION, "dry-run"), ("rate_limited", None, DECISION, "rate-limited"),
    ("cooldown", None, DECISION, "rate-limited"), ("suppressed", None, DECISION, "guard"),
    ("guard", None, DECISION, "guard"), ("failed", False, ACTION, "failed"),
    ("error", False, ACTION, "failed"), ("skipped", None, ACTION, "skipped"),
    ("act", False, DECISION, None), ("act", True, DECISION, "dry-run"),
    ("weird-new-word", None, ACTION, "weird-new-word"),
])
def test_outcome_classes(raw, dry_run, kind, expected):
    assert outcome_class(raw, dry_run, kind) == expected


def test_falco_shaped_alert_maps_to_a_detection():
    m = map_record({"output": "10:00:00.000000000: Notice shell", "priority": "Notice",
                    "rule": "Terminal shell in container", "time": "2026-11-23T10:00:00Z",
                    "output_fields": {"k8s.ns.name": "prod", "k8s.pod.name": "web",
                                      "proc.name": "bash"},
                    "hostname": "node-a", "source": "syscall", "tags": ["shell"]})
    d = m.detection
    assert m.response is None and d.complete
    assert (d.rule, d.priority, d.namespace, d.pod, d.node) == (
        "Terminal shell in container", int(Priority.NOTICE), "prod", "web", "node-a")
    assert d.key.startswith("e:")  # named by rule + event time, as the responder names it


def test_responder_records_join_the_alert_by_rule_and_event_time():
    alert = map_record({"rule": "R", "priority": "Warning", "output": "o",
                        "time": "2026-11-23T10:00:00.000000005Z"}).detection
    action = map_record({"kind": "action", "match_id": "b1", "outcome": "dry-run", "rule": "R",
                         "priority": "Warning", "policy": "p", "action": "kill", "index": 0,
                         "target": {"pid": 7, "start_ticks": 9}, "dry_run": True,
                         "render": {"signal": "KILL"}, "retries": 0,
                         "start_ns": 1_795_428_000_000_001_000, "duration_ns": 2_500_000,
                         "event_time_ns": 1_795_428_000_000_000_005})
    assert action.detection.key == alert.key and not action.detection.complete
    r = action.response
    assert (r.kind, r.action, r.outcome_class, r.retries, r.latency_ms) == (
        ACTION, "kill", "dry-run", 0, 2.5)
    view = response_view(r.record)
    assert view["would"] == {"signal": "KILL"} and view["target"] == {"pid": 7, "start_ticks": 9}
    assert view["extra"] == {}  # index and the rest have their own columns
    assert r.time_ns == 1_795_428_000_000_001_000
    assert action.detection.time_ns == 1_795_428_000_000_000_005


@pytest.mark.parametrize("kind, outcome, expected", [
    ("match", "matched", None), ("drop", "dropped", "dropped"), ("breaker", "tripped", "guard"),
    ("decision", "stopped", None), ("action", "suppressed", "guard"),
    ("action", "cooldown", "rate-limited"), ("action", "noop", "done"),
])
def test_responder_kinds_and_outcomes(kind, outcome, expected):
    r = map_record({"kind": kind, "match_id": "m", "outcome": outcome, "rule": "R",
                    "start_ns": 2, "event_time_ns": 1}).response
    assert r.kind == kind and r.outcome_class == expected


def test_aliases_and_nested_alert():
    m = map_record({"type": "action_outcome", "ts": 1_795_428_000.5, "trace_id": "ab" * 16,
                    "alert": {"rule": "R", "priority": "Warning", "time_ns": 5},
                    "action": "kill", "result": "ok", "attempts": 3, "latency_s": 0.002,
                    "parameters": {"signal": "KILL"}})
    r = m.response
    assert r is not None and r.kind == ACTION
    assert (r.action, r.outcome_class, r.retries) == ("kill", "done", 2)
    assert response_view(r.record)["params"] == {"signal": "KILL"}
    assert r.latency_ms == pytest.approx(2.0)
    assert not m.detection.complete
    assert m.detection.time_ns == 5 and m.detection.rule == "R"


def test_without_event_time_the_match_id_names_the_detection():
    m = map_record({"kind": "decision", "match_id": "b7", "policy": "p", "outcome": "act",
                    "start_ns": 3})
    assert m.detection.key == "m:b7"


def test_an_alert_may_carry_its_time_as_ts():
    d = map_record({"kind": "alert", "rule": "R", "output": "o", "ts": 1_795_428_000}).detection
    assert d.time_ns == 1_795_428_000 * 10**9


def test_kind_is_inferred_when_absent():
    assert map_record({"time_ns": 1, "trace_id": "t", "policy": "p",
                       "outcome": "guard"}).response.kind == DECISION
    assert map_record({"time_ns": 1, "trace_id": "t", "action": "kill"}).response.kind == ACTION


@pytest.mark.parametrize("record, message", [
    ([1, 2], "expected a JSON object"),
    ({"hello": "world"}, "not an audit record"),
    ({"kind": "alert", "rule": "R", "output": "x"}, "no timestamp"),
    ({"kind": "action", "action": "kill", "start_ns": 1}, "names no detection"),
])
def test_non_records_are_refused(record, message):
    with pytest.raises(RecordError, match=message):
        map_record(record)


def test_alert_record_round_trips_through_the_mapping():
    alert = Alert(rule="R", priority=Priority.CRITICAL, output="out <b>",
                  output_fields={"k8s.ns.name": "prod"}, time_ns=1_795_428_000_000_000_001,
                  hostname="node-a", trace_id="f" * 32, tags=("a",))
    record = alert_record(alert)
    assert record["kind"] == ALERT
    d = map_record(record).detection
    assert (d.time_ns, d.rule, d.priority, d.namespace, d.trace_id) == (
        alert.time_ns, "R", int(Priority.CRITICAL), "prod", "f" * 32)
