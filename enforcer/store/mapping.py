"""The one place that knows the shape of audit records: JSONL dicts (and Alerts) to store rows.

The records come from two writers, and this module reads both tolerantly, so that a renamed
key is a one-file change here:

- the responder's audit log (enforcer/audit/record.py `AuditRecord.as_dict()`): `kind`
  `match` | `decision` | `action` | `breaker` | `drop`, `match_id`, `outcome`, `rule`,
  `priority` (display word), `policy`, `action`, `index`, `target` (object), `dry_run`,
  `reason`, `guard`, `message`, `render` (the exact operation, done or that would be done),
  `detail`, `retries`, `error`, `trace_id`, `start_ns`, `duration_ns`, `event_time_ns`.
  These records carry no alert text: that comes from
- alerts, in Falco's JSON shape (`Alert.falco_json()`, as the file output writes them, or
  fed to the store's writer): `rule`, `priority`, `output`, `output_fields`, `time` (RFC 3339
  with ns), `tags`, `hostname`, `source`, optional `trace_id`; `kind: alert` is optional.

One detection = one alert. Both writers name it by the rule and the event's time in ns (the
alert's `time`, the responder's `event_time_ns`), so alerts and responses join whatever order
they arrive in and whether or not tracing is on; without an event time a record falls back on
`detection_id`/`match_id`, then `trace_id`. Also accepted: `type`/`record` for the kind,
`time_ns`/`ts`/`timestamp`/`time` for the record's time, `params`/`parameters`,
`latency_ms`/`duration_ms`/`latency_s`, `attempts` (retries + 1), `would`/`plan` for `render`,
and the alert nested under `alert`.

Outcomes are normalised into the console's classes: done (incl. noop), dry-run, rate-limited
(incl. cooldown), guard (suppressed by a guard, or the budget breaker tripping), failed,
skipped (missing fields), dropped (responder queue full); the raw word is kept for display.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from enforcer.alert import Alert
from enforcer.priority import Priority

ALERT, DECISION, ACTION = "alert", "decision", "action"
MATCH, BREAKER, DROP = "match", "breaker", "drop"  # the responder's other records

_KIND_WORDS = {
    "alert": ALERT, "detection": ALERT,
    "match": MATCH, "breaker": BREAKER, "drop": DROP,
    "decision": DECISION, "policy": DECISION, "policy_decision": DECISION,
    "action": ACTION, "outcome": ACTION, "action_outcome": ACTION, "response": ACTION,
}

#: Outcome classes the console filters on, in display order.
OUTCOME_CLASSES = ("done", "dry-run", "rate-limited", "guard", "failed", "skipped", "dropped")

_OUTCOME_WORDS = {
    "done": "done", "ok": "done", "success": "done", "succeeded": "done", "applied": "done",
    "noop": "done", "acted": "done", "act": "done",
    "done-in-kernel": "done", "killed-in-kernel": "done",
    "dry-run": "dry-run", "dry_run": "dry-run", "dryrun": "dry-run", "would": "dry-run",
    "rate-limited": "rate-limited", "rate_limited": "rate-limited", "ratelimited": "rate-limited",
    "cooldown": "rate-limited", "budget": "rate-limited",
    "guard": "guard", "guarded": "guard", "suppressed": "guard", "refused": "guard",
    "protected": "guard", "tripped": "guard", "suspended": "guard",
    "failed": "failed", "failure": "failed", "error": "failed",
    "skipped": "skipped", "skip": "skipped", "missing-fields": "skipped",
    "dropped": "dropped",
    # Steps of the flow rather than outcomes: the actions' records say what happened.
    "matched": None, "stopped": None, "queued": None, "resumed": None,
}

# Output fields that identify where a detection happened, for the list's filters.
_NAMESPACE_KEYS = ("k8s.ns.name", "k8s.namespace.name", "ka.target.namespace")
_POD_KEYS = ("k8s.pod.name",)
_NODE_KEYS = ("k8s.node.name", "node", "evt.hostname")
_CONTAINER_KEYS = ("container.name", "container.id")


class RecordError(ValueError):
    """A JSON value that cannot be an audit record; the message says why."""


@dataclass
class DetectionRow:
    """One detection (an alert); fields may be partial when a response arrives first."""

    key: str
    time_ns: int
    rule: str | None = None
    priority: int | None = None
    output: str | None = None
    output_fields: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    source: str | None = None
    hostname: str | None = None
    namespace: str | None = None
    pod: str | None = None
    node: str | None = None
    container: str | None = None
    trace_id: str | None = None
    complete: bool = True  # False: a placeholder made from a response record


@dataclass
class ResponseRow:
    """One policy decision or one action outcome, attached to a detection by `key`."""

    key: str
    kind: str  # DECISION, ACTION, MATCH, BREAKER or DROP
    time_ns: int
    policy: str | None
    action: str | None
    dry_run: bool | None
    outcome: str | None
    outcome_class: str | None
    error: str | None
    retries: int | None
    latency_ms: float | None
    trace_id: str | None
    span_id: str | None
    ident: str  # what makes this record the same one again, within its detection
    record: dict[str, Any]
    raw: str | None = None  # the record's JSON text as read, stored as is


@dataclass
class Mapped:
    """What one record contributes: a detection (full or placeholder) and maybe a response."""

    detection: DetectionRow
    response: ResponseRow | None = None


def parse_time_ns(value: Any) -> int | None:
    """Nanoseconds since the epoch from RFC 3339 text or a number in s, ms or ns."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        for limit, scale in ((10**17, 1), (10**14, 1_000), (10**11, 1_000_000)):
            if value > limit:
                return value * scale
        return value * 1_000_000_000
    if isinstance(value, float):
        if value > 1e11:  # ms or finer as a float: already past float's precision anyway
            return parse_time_ns(int(value))
        whole = int(value)
        return whole * 1_000_000_000 + round((value - whole) * 1_000_000_000)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.isdigit():
            return parse_time_ns(int(text))
        try:
            return parse_time_ns(float(text))
        except ValueError:
            pass
        nanos = 0
        # datetime keeps microseconds only: split off the fraction to keep Falco's ns.
        head, dot, rest = text.partition(".")
        if dot:
            digits = ""
            for ch in rest:
                if not ch.isdigit():
                    break
                digits += ch
            tail = rest[len(digits):]
            nanos = int((digits + "000000000")[:9]) if digits else 0
            text = head + tail
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            stamp = datetime.fromisoformat(text)
        except ValueError:
            return None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return int(stamp.timestamp()) * 1_000_000_000 + nanos
    return None


def _explicit_ns(value: Any) -> int | None:
    """A `time_ns` key is nanoseconds whatever its size."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return parse_time_ns(value)


_PRIORITY_WORDS = {p.name.lower(): int(p) for p in Priority} | {"info": int(Priority.INFORMATIONAL)}


def parse_priority(value: Any) -> int | None:
    """Falco priority number (0 = Emergency) from a word or number; None when unknown."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 7:
        return value
    if isinstance(value, str):
        known = _PRIORITY_WORDS.get(value.lower())
        if known is not None:
            return known
    try:
        return int(Priority.parse(str(value)))
    except ValueError:
        return None


def outcome_class(outcome: Any, dry_run: Any = None, kind: str = ACTION) -> str | None:
    """The console's outcome class for a raw outcome word (and the record's dry_run flag)."""
    if outcome is None or outcome == "":
        return "dry-run" if dry_run is True and kind == ACTION else None
    word = str(outcome).strip().lower().replace(" ", "-")
    if word in _OUTCOME_WORDS:
        cls = _OUTCOME_WORDS[word]
    elif word.replace("-", "_") in _OUTCOME_WORDS:
        cls = _OUTCOME_WORDS[word.replace("-", "_")]
    elif "rate" in word or "limit" in word:
        cls = "rate-limited"
    elif "guard" in word or "protect" in word:
        cls = "guard"
    elif "fail" in word or "error" in word:
        cls = "failed"
    else:
        cls = word
    if cls is None:
        return None
    # A dry run that went through every check is "dry-run", not "done".
    if cls == "done" and dry_run is True:
        return "dry-run"
    # A decision to act is not an outcome: its actions' records say what happened.
    if cls == "done" and kind == DECISION:
        return None
    return cls


def record_kind(record: dict[str, Any]) -> str:
    """alert, decision or action; raises RecordError when the record is none of them."""
    word = record.get("kind")
    if isinstance(word, str):
        kind = _KIND_WORDS.get(word) or _KIND_WORDS.get(word.strip().lower())
        if kind:
            return kind
    for key in ("type", "record", "event"):
        word = record.get(key)
        if isinstance(word, str) and word.strip().lower() in _KIND_WORDS:
            return _KIND_WORDS[word.strip().lower()]
    if record.get("action"):
        return ACTION
    if record.get("policy"):
        return DECISION
    if record.get("match_id") and record.get("outcome") == "matched":
        return MATCH
    if record.get("rule") and ("output" in record or "output_fields" in record):
        return ALERT
    if isinstance(record.get("alert"), dict):
        return ALERT
    raise RecordError("not an audit record: no kind, and neither rule/output nor policy/action")


def _first(doc: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = doc.get(key)
        if value is not None and value != "":
            return value
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _field(fields: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = fields.get(key)
        if value is not None and value != "":
            return str(value)
    return None


def _event_key(rule: Any, event_ns: int) -> str:
    """The detection's name: its rule and its event's time, as both writers know them."""
    digest = hashlib.blake2b(f"{rule}\0{event_ns}".encode(), digest_size=12)
    return "e:" + digest.hexdigest()


def _fallback_key(record: dict[str, Any], alert: dict[str, Any]) -> str | None:
    for doc in (record, alert):
        value = _first(doc, "detection_id", "alert_id", "match_id")
        if value is not None:
            return f"m:{value}"
    value = _first(record, "trace_id") or _first(alert, "trace_id")
    return None if value is None else f"t:{value}"


def map_record(record: Any, raw: str | None = None) -> Mapped:
    """Map one decoded JSONL value (read from `raw`, if given) to store rows.

    Raises RecordError for a value that is not an audit record.
    """
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    kind = record_kind(record)
    nested = record.get("alert")
    alert = nested if isinstance(nested, dict) else {}
    # An alert's own keys sit at the top level (Falco's shape plus ours) or under "alert".
    src = ({**record, **alert} if alert else record) if kind == ALERT else alert
    # The event's time: the alert's own, or what a response record says it was.
    event_ns = None
    if src:
        event_ns = _explicit_ns(src.get("time_ns"))
        if event_ns is None:
            event_ns = parse_time_ns(src.get("time"))
    if kind == ALERT:
        time_ns = event_ns
        if time_ns is None:
            time_ns = event_ns = parse_time_ns(_first(record, "ts", "timestamp"))
    else:
        time_ns = _explicit_ns(_first(record, "time_ns", "start_ns"))
        if time_ns is None:
            time_ns = parse_time_ns(_first(record, "ts", "timestamp", "time"))
        if event_ns is None:
            event_ns = _explicit_ns(record.get("event_time_ns"))
    if time_ns is None:
        time_ns = event_ns
    if time_ns is None:
        raise RecordError("no timestamp (time, time_ns, start_ns, ts or timestamp)")
    rule = src.get("rule") or record.get("rule")
    output = src.get("output")
    if rule and event_ns is not None:
        key = _event_key(rule, event_ns)
    else:
        key = _fallback_key(record, alert)
    if key is None:
        if kind != ALERT:
            raise RecordError(f"{kind} record names no detection: no rule and event time, "
                              "no match_id, no trace_id")
        key = _event_key(f"{rule}\0{output}", time_ns)
    fields = src.get("output_fields") or record.get("output_fields") or {}
    if not isinstance(fields, dict):
        fields = {}
    target = record.get("target")
    where = target if isinstance(target, dict) and not fields else {}
    tags = src.get("tags") or record.get("tags") or []
    hostname = _text(src.get("hostname") or record.get("hostname"))
    detection = DetectionRow(
        key=key,
        time_ns=event_ns if event_ns is not None else time_ns,
        rule=None if rule is None else str(rule),
        priority=parse_priority(src.get("priority") or record.get("priority")),
        output=None if output is None else str(output),
        output_fields=fields,
        tags=[str(t) for t in tags] if isinstance(tags, list | tuple) else [str(tags)],
        source=_text(src.get("source") or record.get("source")),
        hostname=hostname,
        namespace=(_field(fields, _NAMESPACE_KEYS) or _text(record.get("namespace"))
                   or _text(where.get("namespace"))),
        pod=_field(fields, _POD_KEYS) or _text(record.get("pod")) or _text(where.get("pod")),
        node=(_field(fields, _NODE_KEYS) or _text(record.get("node")) or hostname
              or _text(where.get("node"))),
        container=_field(fields, _CONTAINER_KEYS),
        trace_id=_text(record.get("trace_id") or alert.get("trace_id")),
        complete=kind == ALERT,
    )
    if kind == ALERT:
        return Mapped(detection)
    dry_run = record.get("dry_run")
    outcome = _first(record, "outcome", "result", "status", "decision")
    retries = record.get("retries")
    if retries is None and isinstance(record.get("attempts"), int):
        retries = max(0, record["attempts"] - 1)
    policy = _text(record.get("policy"))
    action = _text(record.get("action")) if kind == ACTION else None
    span_id = _text(record.get("span_id"))
    response = ResponseRow(
        key=key,
        kind=kind,
        time_ns=time_ns,
        policy=policy,
        action=action,
        dry_run=None if dry_run is None else bool(dry_run),
        outcome=_text(outcome),
        outcome_class=outcome_class(outcome, dry_run, kind),
        error=_text(_first(record, "error", "reason")),
        retries=int(retries) if isinstance(retries, int | float) else None,
        latency_ms=_latency_ms(record),
        trace_id=_text(record.get("trace_id")),
        span_id=span_id,
        ident=f"{kind}|{time_ns}|{policy}|{action}|{record.get('index')}|{outcome}|{span_id}"
              f"|{retries}",
        record=record,
        raw=raw,
    )
    return Mapped(detection, response)


def _latency_ms(record: dict[str, Any]) -> float | None:
    for key, scale in (("duration_ns", 1e-6), ("latency_ms", 1.0), ("duration_ms", 1.0),
                       ("latency_s", 1000.0),
                       ("latency", 1000.0), ("duration_s", 1000.0), ("latency_us", 0.001)):
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) * scale
    return None


# Record keys shown in their own columns; the detail page lists the rest as details.
_SHOWN = frozenset({"kind", "type", "record", "match_id", "outcome", "result", "status",
                    "decision", "rule", "priority", "policy", "action", "target", "dry_run",
                    "render", "would", "plan", "rendered", "params", "parameters", "retries",
                    "attempts", "error", "trace_id", "span_id", "start_ns", "time_ns", "ts",
                    "timestamp", "time", "duration_ns", "latency_ms", "duration_ms",
                    "latency_s", "latency", "event_time_ns", "alert", "output",
                    "output_fields", "index", "reason"})


def response_view(record: dict[str, Any]) -> dict[str, Any]:
    """What the console shows of a stored response record beyond its columns: the target,
    the parameters, the exact operation (done or that would be done), and other details."""
    extra = {k: v for k, v in record.items() if k not in _SHOWN and v is not None}
    if record.get("error") and record.get("reason"):
        extra["reason"] = record["reason"]  # the error took the reason's column
    return {
        "target": record.get("target"),
        "params": _first(record, "params", "parameters"),
        "would": _first(record, "render", "would", "plan", "rendered"),
        "extra": extra,
    }


def alert_record(alert: Alert) -> dict[str, Any]:
    """An Alert as the audit record the store (and the JSONL log) would hold for it."""
    doc = alert.falco_json()
    doc["kind"] = ALERT
    doc["time_ns"] = alert.time_ns
    return doc
