"""Audit records (the JSONL dicts) to PostgreSQL rows with stable ids, for COPY.

The ids make a retry harmless: a detection's id is a hash of the writing node and the
detection's key (its rule and event time, see enforcer.store.mapping), a response's id a
hash of the node and the record itself as canonical JSON. Replaying a spooled batch, or a
batch whose commit was lost with the connection, yields the same ids, and the insert skips
them (ON CONFLICT DO NOTHING).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from enforcer.store.mapping import Mapped, map_record

DETECTION_COLUMNS = ("id", "node", "key", "time_ns", "rule", "priority", "output",
                     "output_fields", "tags", "source", "hostname", "namespace", "pod",
                     "trace_id", "complete", "container")
RESPONSE_COLUMNS = ("id", "node", "det_id", "det_time_ns", "kind", "time_ns", "policy",
                    "action", "dry_run", "outcome", "outcome_class", "error", "retries",
                    "latency_ms", "trace_id", "span_id", "record")

_COMPLETE = DETECTION_COLUMNS.index("complete")

_DUMP = json.JSONEncoder(sort_keys=True, default=str, ensure_ascii=False,
                         separators=(",", ":")).encode


def canonical(record: Any) -> str:
    """The record as canonical JSON: the same record gives the same text every time."""
    return _DUMP(record)


def stable_id(*parts: str) -> int:
    """A positive 63-bit id from its parts (fits bigint; shows as a plain number in URLs)."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _jsonb(text: str) -> str:
    # jsonb refuses the NUL character: one such record must not block every later batch.
    return text.replace("\\u0000", "\\ufffd")


def _text(value: str | None) -> str | None:
    return None if value is None else value.replace("\x00", "\ufffd")


@dataclass
class Rows:
    """A batch as COPY rows, deduplicated by primary key."""

    detections: dict[tuple[int, int], tuple[Any, ...]] = field(default_factory=dict)
    responses: dict[tuple[int, int], tuple[Any, ...]] = field(default_factory=dict)

    def days(self) -> set[date]:
        """The UTC days (partitions) the rows fall in."""
        times = {k[0] for k in self.detections} | {k[0] for k in self.responses}
        return {datetime.fromtimestamp(t // 1_000_000_000, UTC).date() for t in times}

    def complete(self) -> int:
        """How many detections are complete (from their alert), not placeholders."""
        return sum(1 for row in self.detections.values() if row[_COMPLETE])

    def __len__(self) -> int:
        return len(self.detections) + len(self.responses)


def add(rows: Rows, node: str, record: dict[str, Any], mapped: Mapped | None = None) -> None:
    """Add one audit record (raises RecordError when it is not one)."""
    mapped = mapped or map_record(record)
    det = mapped.detection
    det_id = stable_id(node, det.key)
    pk = (det.time_ns, det_id)
    if det.complete or pk not in rows.detections:
        rows.detections[pk] = (
            det_id, node, det.key, det.time_ns, _text(det.rule), det.priority,
            _text(det.output), _jsonb(canonical(det.output_fields)), _jsonb(canonical(det.tags)),
            _text(det.source), _text(det.hostname), _text(det.namespace), _text(det.pod),
            det.trace_id, det.complete, _text(det.container))
    r = mapped.response
    if r is None:
        return
    text = canonical(record)
    rid = stable_id(node, text)
    rows.responses[(det.time_ns, rid)] = (
        rid, node, det_id, det.time_ns, r.kind, r.time_ns, _text(r.policy), _text(r.action),
        r.dry_run, _text(r.outcome), r.outcome_class, _text(r.error), r.retries,
        r.latency_ms, r.trace_id, r.span_id, _jsonb(text))
