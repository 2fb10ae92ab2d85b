"""Black-box checks of `enforcer replay` against the upstream stable Falco rules, unchanged.

Each file in tests/data/events/stable/ holds hand-written events for one upstream rule: what
Falco would see on Linux when the rule's behaviour happens (exit event, real field values,
container fields when the rule needs a container), the exact alert Falco prints, and
near misses that differ in exactly one field and must not trigger the rule. Every one of the
25 rules of falco_rules.yaml is enabled by default, so all are tested with the file as is.

Expectations were derived by reading each rule with its macros and lists, and Falco's
formatter: a missing field renders `<NA>` in `output` and `null` in `output_fields`, numbers
stay numbers in `output_fields`, the summary on stderr is Falco's stats_manager format.
"""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.clirun import CliResult, run_cli, write_events

REPO = Path(__file__).resolve().parents[3]
STABLE = REPO / "tests" / "data" / "falco-rules" / "falco_rules.yaml"
CASES_DIR = REPO / "tests" / "data" / "events" / "stable"

# Falco's display words, and the upper-case short forms of its end-of-run summary.
DISPLAY = {
    "EMERGENCY": "Emergency", "ALERT": "Alert", "CRITICAL": "Critical", "ERROR": "Error",
    "WARNING": "Warning", "NOTICE": "Notice", "INFO": "Informational",
    "INFORMATIONAL": "Informational", "DEBUG": "Debug",
}
SUMMARY_ORDER = ["EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE", "INFO", "DEBUG"]
FIELD_REF = re.compile(r"%([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)+(?:\[[^\]]*\])?)")


def _upstream_rules() -> dict[str, dict[str, Any]]:
    """The upstream rules read with plain YAML, independently of the engine under test."""
    items = yaml.safe_load(STABLE.read_text())
    rules = {}
    for item in items:
        if isinstance(item, dict) and "rule" in item:
            rules[item["rule"]] = item
    return rules


UPSTREAM = _upstream_rules()
RULE_ORDER = list(UPSTREAM)


def _load_cases() -> list[dict[str, Any]]:
    cases = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for case in doc["cases"]:
            case = dict(case)
            case["rule"] = doc["rule"]
            case["file"] = path.name
            cases.append(case)
    return cases


CASES = _load_cases()
NEAR_MISSES = [
    (case, miss) for case in CASES for miss in case.get("near_misses", [])
]


def _case_id(case: dict[str, Any]) -> str:
    return f"{case['file'][:2]}-{case['id']}"


def _apply(event: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """The event with one field changed; a null value removes the field (now missing)."""
    changed = dict(event)
    for key, value in change.items():
        if value is None:
            changed.pop(key, None)
        else:
            changed[key] = value
    return changed


def _replay(tmp_path: Path, events: list[dict[str, Any]]) -> CliResult:
    stream = write_events(tmp_path / "events.jsonl", events)
    result = run_cli("replay", stream, "--rules", STABLE)
    assert result.code == 0, f"replay failed ({result.code}):\n{result.stderr}"
    return result


def _field_value(event: dict[str, Any], ref: str) -> Any:
    """What Falco puts in output_fields for `ref` given this event (None when missing)."""
    if ref in event:
        return event[ref]
    match = re.fullmatch(r"(proc\.a\w+)\[(\d+)\]", ref)
    if match and isinstance(event.get(match.group(1)), list):
        ancestors, index = event[match.group(1)], int(match.group(2))
        return ancestors[index - 1] if 1 <= index <= len(ancestors) else None
    return None


def _suggested(event: dict[str, Any]) -> str:
    """What `append_output: [{suggested_output: true}]` adds: ` foo_bar=value` for each of
    the container plugin's suggested fields, `<NA>` when the event lacks it."""
    return "".join(f" {ref.replace('.', '_')}={_field_value(event, ref) or '<NA>'}"
                   for ref in ("container.id", "container.name", "container.image.repository",
                               "container.image.tag", "k8s.pod.name", "k8s.ns.name"))


def _iso(rawtime: int) -> str:
    secs, nanos = divmod(rawtime, 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def test_every_stable_rule_is_covered() -> None:
    covered = {case["rule"] for case in CASES}
    assert covered <= set(UPSTREAM), covered - set(UPSTREAM)
    assert len(covered) >= 25
    assert all(UPSTREAM[name].get("enabled", True) for name in covered)
    for name in covered:
        assert any(miss for case, miss in NEAR_MISSES if case["rule"] == name), name


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_rule_fires_with_falco_output(case: dict[str, Any], tmp_path: Path) -> None:
    alerts = _replay(tmp_path, [case["event"]]).alerts()
    assert [a["rule"] for a in alerts] == case["expect"]
    alert = next(a for a in alerts if a["rule"] == case["rule"])
    upstream = UPSTREAM[case["rule"]]

    # Falco's shipped falco.yaml appends the container plugin's suggested fields
    assert alert["output"] == case["output"] + _suggested(case["event"])
    assert alert["priority"] == DISPLAY[str(upstream["priority"]).strip().upper()]
    assert alert["source"] == "syscall"
    assert sorted(alert["tags"]) == sorted(upstream["tags"])
    assert alert["time"] == _iso(case["event"]["evt.rawtime"])
    assert alert["hostname"] == socket.gethostname()

    fields = alert["output_fields"]
    for ref, expected in case["output_fields"].items():
        assert ref in fields, f"output_fields lacks {ref}"
        assert fields[ref] == expected, ref
    # Falco reports every field of the rule's output, with the event's value or null.
    for ref in FIELD_REF.findall(upstream["output"]):
        assert ref in fields, f"output_fields lacks {ref}"
        assert fields[ref] == _field_value(case["event"], ref), ref


@pytest.mark.parametrize(
    ("case", "miss"), NEAR_MISSES, ids=[f"{_case_id(c)}-{m['id']}" for c, m in NEAR_MISSES]
)
def test_near_miss_does_not_fire(
    case: dict[str, Any], miss: dict[str, Any], tmp_path: Path
) -> None:
    event = _apply(case["event"], miss["change"])
    alerts = _replay(tmp_path, [event]).alerts()
    rules = [a["rule"] for a in alerts]
    assert case["rule"] not in rules, miss["why"]
    assert rules == miss["expect"]


def _summary(count: int, by_rule: dict[str, int]) -> str:
    by_priority: dict[str, int] = {}
    for name, n in by_rule.items():
        word = str(UPSTREAM[name]["priority"]).strip().upper()
        word = "INFO" if word == "INFORMATIONAL" else word
        by_priority[word] = by_priority.get(word, 0) + n
    lines = [f"Events detected: {count}", "Rule counts by severity:"]
    lines += [f"   {p}: {by_priority[p]}" for p in SUMMARY_ORDER if p in by_priority]
    lines.append("Triggered rules by rule name:")
    lines += [f"   {name}: {by_rule[name]}" for name in RULE_ORDER if name in by_rule]
    return "\n".join(lines) + "\n"


def test_one_stream_summary_counts(tmp_path: Path) -> None:
    events = [case["event"] for case in CASES]
    # Benign traffic in the same stream must change nothing.
    events += [_apply(case["event"], miss["change"]) for case, miss in NEAR_MISSES
               if not miss["expect"]]
    by_rule: dict[str, int] = {}
    for case in CASES:
        for name in case["expect"]:
            by_rule[name] = by_rule.get(name, 0) + 1
    total = sum(by_rule.values())

    result = _replay(tmp_path, events)
    alerts = result.alerts()
    assert len(alerts) == total
    assert sorted(a["rule"] for a in alerts) == sorted(
        name for name, n in by_rule.items() for _ in range(n)
    )
    assert _summary(total, by_rule) in result.stderr


def test_output_fields_carry_evt_time(tmp_path: Path) -> None:
    """Falco adds the fields of its `%evt.time: Priority` prefix to output_fields, so every
    Falco JSON alert has `"evt.time": <ns since epoch>` (e.g. "evt.time":1690409397827858816);
    tools that consume Falco alerts read it."""
    case = CASES[0]
    alert = _replay(tmp_path, [case["event"]]).alerts()[0]
    assert alert["output_fields"].get("evt.time") == case["event"]["evt.rawtime"]


def test_summary_with_no_detection(tmp_path: Path) -> None:
    """Falco prints the summary headers even when nothing matched."""
    benign = [_apply(case["event"], miss["change"]) for case, miss in NEAR_MISSES
              if not miss["expect"]]
    result = _replay(tmp_path, benign)
    assert result.alerts() == []
    assert ("Events detected: 0\nRule counts by severity:\nTriggered rules by rule name:\n"
            in result.stderr)
