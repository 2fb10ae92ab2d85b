"""Apply mapped audit records to the store, a batch per transaction, idempotently.

Used by the agent's writer thread and by `enforcer audit import`. Records may arrive in any
order: a response whose alert has not been seen yet creates a placeholder detection that the
alert completes later. Importing the same log twice adds nothing (detections are keyed by the
detection id, responses by their identifying fields).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from enforcer.store import rollup
from enforcer.store.mapping import DetectionRow, Mapped, ResponseRow

_UPSERT_DETECTION = """
INSERT INTO detections (key, time_ns, rule, priority, output, output_fields, tags, source,
                        hostname, namespace, pod, node, container, trace_id, complete)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
ON CONFLICT (key) DO UPDATE SET
    time_ns = excluded.time_ns, rule = excluded.rule, priority = excluded.priority,
    output = excluded.output, output_fields = excluded.output_fields, tags = excluded.tags,
    source = excluded.source, hostname = excluded.hostname, namespace = excluded.namespace,
    pod = excluded.pod, node = excluded.node, container = excluded.container,
    trace_id = coalesce(excluded.trace_id, detections.trace_id), complete = 1
WHERE detections.complete = 0
"""

# A placeholder learns where it happened from whichever response names a target first.
_PLACEHOLDER = """
INSERT INTO detections (key, time_ns, rule, priority, namespace, pod, node, hostname,
                        trace_id, complete)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)
ON CONFLICT (key) DO UPDATE SET
    namespace = coalesce(detections.namespace, excluded.namespace),
    pod = coalesce(detections.pod, excluded.pod),
    node = coalesce(detections.node, excluded.node),
    trace_id = coalesce(detections.trace_id, excluded.trace_id)
WHERE detections.complete = 0
"""

_INSERT_RESPONSE = """
INSERT OR IGNORE INTO responses (rhash, det_id, det_time_ns, kind, time_ns, policy, action,
    dry_run, outcome, outcome_class, error, retries, latency_ms, trace_id, span_id, record)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# Sorted, so that the summaries do not depend on the order records arrived in.
_SUMMARISE = """
UPDATE detections SET
    outcomes = (SELECT group_concat(x) FROM (SELECT DISTINCT outcome_class AS x
                FROM responses WHERE det_id = detections.id AND x IS NOT NULL ORDER BY x)),
    policies = (SELECT group_concat(x) FROM (SELECT DISTINCT policy AS x
                FROM responses WHERE det_id = detections.id AND x IS NOT NULL ORDER BY x)),
    actions = (SELECT group_concat(x) FROM (SELECT DISTINCT action AS x
               FROM responses WHERE det_id = detections.id AND x IS NOT NULL ORDER BY x))
WHERE id IN (SELECT value FROM json_each(?))
"""

# A completed placeholder may have moved in time: keep the responses' copy in step.
_RETIME = """
UPDATE responses SET det_time_ns = detections.time_ns FROM detections
WHERE detections.id = responses.det_id AND responses.det_time_ns != detections.time_ns
  AND detections.id IN (SELECT value FROM json_each(?))
"""

_DUMP = json.JSONEncoder(sort_keys=True, default=str, ensure_ascii=False).encode


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return _DUMP(value)


def _response_hash(r: ResponseRow) -> int:
    """The response's identity within its detection, as a 64-bit int."""
    digest = hashlib.blake2b(r.ident.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _detection_values(d: DetectionRow) -> tuple[Any, ...]:
    return (d.key, d.time_ns, d.rule, d.priority, d.output, _json(d.output_fields),
            _json(d.tags), d.source, d.hostname, d.namespace, d.pod, d.node, d.container,
            d.trace_id)


@dataclass
class Prepared:
    """A batch turned into SQL parameters: plain tuples, cheap to send between processes."""

    count: int = 0
    full_keys: list[str] = field(default_factory=list)
    full: list[tuple[Any, ...]] = field(default_factory=list)
    placeholders: list[tuple[Any, ...]] = field(default_factory=list)
    # (detection key, response values without det_id and det_time_ns)
    responses: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)


def prepare(batch: Iterable[Mapped]) -> Prepared:
    """Everything about a batch that needs no database: the CPU-heavy half of a write."""
    full: dict[str, DetectionRow] = {}
    placeholders: dict[str, DetectionRow] = {}
    out = Prepared()
    for mapped in batch:
        out.count += 1
        det = mapped.detection
        if det.complete:
            full.setdefault(det.key, det)
        elif det.key not in placeholders:
            placeholders[det.key] = det
        r = mapped.response
        if r is not None:
            out.responses.append((r.key, (
                _response_hash(r), r.kind, r.time_ns, r.policy, r.action,
                None if r.dry_run is None else int(r.dry_run), r.outcome, r.outcome_class,
                r.error, r.retries, r.latency_ms, r.trace_id, r.span_id,
                r.raw.strip() if r.raw is not None else _DUMP(r.record))))
    out.full_keys = list(full)
    out.full = [_detection_values(d) for d in full.values()]
    out.placeholders = [
        (d.key, d.time_ns, d.rule, d.priority, d.namespace, d.pod, d.node, d.hostname,
         d.trace_id) for key, d in placeholders.items() if key not in full]
    return out


def write(conn: sqlite3.Connection, batch: Prepared) -> int:
    """Write a prepared batch in one transaction; returns how many records it held."""
    if not batch.count:
        return 0
    conn.execute("BEGIN")
    try:
        _write(conn, batch)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return batch.count


def _write(conn: sqlite3.Connection, batch: Prepared) -> None:
    keys = batch.full_keys + [row[0] for row in batch.placeholders]
    known: dict[str, int] = {}  # key -> complete, for detections stored before this batch
    for key, complete in conn.execute(
            "SELECT key, complete FROM detections WHERE key IN (SELECT value FROM "
            "json_each(?))", (json.dumps(keys),)):
        known[key] = complete
    # Placeholders this batch's alerts complete: their responses need the alert's time.
    completed = [key for key in batch.full_keys if known.get(key) == 0]
    conn.executemany(_UPSERT_DETECTION, batch.full)
    conn.executemany(_PLACEHOLDER, batch.placeholders)
    new = [(row[1], row[2], row[3]) for row in batch.full + batch.placeholders
           if row[0] not in known]
    rollup.add(conn, "rule", ((t, rule) for t, rule, _ in new))
    rollup.add(conn, "priority", ((t, prio) for t, _, prio in new))
    if batch.responses:
        _write_responses(conn, batch)
    if completed:
        conn.execute(_RETIME, (json.dumps(completed),))


def _write_responses(conn: sqlite3.Connection, batch: Prepared) -> None:
    keys = list({key for key, _ in batch.responses})
    ids: dict[str, tuple[int, int]] = {}
    for row in conn.execute(
            "SELECT key, id, time_ns FROM detections "
            "WHERE key IN (SELECT value FROM json_each(?))", (json.dumps(keys),)):
        ids[row[0]] = (row[1], row[2])
    touched = json.dumps(sorted({ids[k][0] for k in keys}))
    # What the store already held for these detections, to count only what is new.
    stored = {(row[0], row[1]) for row in conn.execute(
        "SELECT det_id, rhash FROM responses WHERE det_id IN (SELECT value FROM json_each(?))",
        (touched,))}
    classes: dict[int, set[str]] = {}
    for det_id, outcomes in conn.execute(
            "SELECT id, outcomes FROM detections WHERE id IN (SELECT value FROM "
            "json_each(?))", (touched,)):
        classes[det_id] = set(outcomes.split(",")) if outcomes else set()
    rows = []
    new_outcomes: list[tuple[int, str]] = []
    dry_runs: list[tuple[int, str]] = []
    for key, values in batch.responses:
        det_id, det_time = ids[key]
        rhash, policy, action, cls = values[0], values[3], values[4], values[7]
        if (det_id, rhash) in stored:
            continue
        stored.add((det_id, rhash))
        rows.append((rhash, det_id, det_time, *values[1:]))
        if cls is not None and cls not in classes[det_id]:
            classes[det_id].add(cls)
            new_outcomes.append((det_time, cls))
        if cls == "dry-run":
            dry_runs.append((det_time, f"{policy or ''}{rollup.SEP}{action or ''}"))
    conn.executemany(_INSERT_RESPONSE, rows)
    conn.execute(_SUMMARISE, (touched,))
    rollup.add(conn, "outcome", new_outcomes)
    rollup.add(conn, "dry-run", dry_runs)


def apply_batch(conn: sqlite3.Connection, batch: Iterable[Mapped]) -> int:
    """Write a batch of mapped records in one transaction; returns how many were given."""
    return write(conn, prepare(batch))
