"""Rebuild (or top up) the audit store from JSONL files: the responder's audit log and the
alerts (Falco JSON, as the agent's file output writes them).

A line that is not JSON, is cut short, or is not an audit record is reported as
`FILE:LINE:COL: reason` and skipped; the agent's own records (reloads, Kubernetes Events not
created) are passed over; every other line is imported. Importing a file twice adds
nothing the second time.

Large imports decode and map lines in worker processes while this process writes to SQLite
(which is single-writer): on two cores that roughly halves the time for a million records.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from enforcer.audit.record import K8S_EVENT, RELOAD
from enforcer.errors import Diagnostic
from enforcer.store.ingest import Prepared, prepare, write
from enforcer.store.mapping import Mapped, RecordError, map_record
from enforcer.store.retention import Retention, prune
from enforcer.store.schema import resume_text_index, suspend_text_index

BATCH = 20_000
# Records the audit log holds about the agent itself rather than a detection: a hot reload,
# a Kubernetes Event that could not be created. The store has no place for them.
AGENT_KINDS = frozenset({RELOAD, K8S_EVENT})
PARALLEL_BYTES = 16 << 20  # below this, starting workers costs more than it saves


@dataclass
class ImportReport:
    """What an import did: lines read, records imported, and each skipped line."""

    lines: int = 0
    imported: int = 0
    skipped: list[Diagnostic] = field(default_factory=list)


def _decode(path: str, lineno: int, raw: bytes) -> Mapped | Diagnostic | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Diagnostic(path, lineno, exc.start + 1, "not UTF-8 text; line skipped")
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        cut = not raw.endswith(b"\n") or exc.pos >= len(text.rstrip())
        why = "truncated JSON record" if cut else f"invalid JSON: {exc.msg}"
        return Diagnostic(path, lineno, exc.colno, f"{why}; line skipped")
    if isinstance(value, dict) and value.get("kind") in AGENT_KINDS:
        return None  # the agent's own records: part of the log, not of a detection
    try:
        return map_record(value, text)
    except RecordError as exc:
        return Diagnostic(path, lineno, 1, f"{exc}; line skipped")


def _chunk(task: tuple[str, int, list[bytes]]) -> tuple[Prepared, list[Diagnostic], int]:
    """Decode, map and prepare one chunk of lines (in a worker, or inline)."""
    name, first, lines = task
    batch: list[Mapped] = []
    skipped: list[Diagnostic] = []
    for offset, raw in enumerate(lines):
        result = _decode(name, first + offset, raw)
        if result is None:
            continue
        if isinstance(result, Diagnostic):
            skipped.append(result)
        else:
            batch.append(result)
    return prepare(batch), skipped, len(lines)


def _tasks(paths: Iterable[str | Path]) -> Iterator[tuple[str, int, list[bytes]]]:
    for path in paths:
        name = str(path)
        with open(path, "rb") as handle:
            first, lines = 1, []
            for raw in handle:
                lines.append(raw)
                if len(lines) >= BATCH:
                    yield name, first, lines
                    first, lines = first + len(lines), []
            if lines:
                yield name, first, lines


def _workers(paths: list[str | Path]) -> int:
    size = sum(os.path.getsize(p) for p in paths)
    if size < PARALLEL_BYTES:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) - 1)


def import_files(conn: sqlite3.Connection, paths: Iterable[str | Path], *,
                 retention: Retention | None = None,
                 on_skip: Callable[[Diagnostic], None] | None = None,
                 workers: int | None = None) -> ImportReport:
    """Import every record of the JSONL files at `paths` into the open store `conn`.

    `workers`: processes that decode lines while this one writes (default: one per core but
    one for large imports, none for small ones).
    """
    paths = list(paths)
    report = ImportReport()

    def take(result: tuple[Prepared, list[Diagnostic], int]) -> None:
        prepared, skipped, lines = result
        report.lines += lines
        for diagnostic in skipped:
            report.skipped.append(diagnostic)
            if on_skip:
                on_skip(diagnostic)
        report.imported += write(conn, prepared)

    count = _workers(paths) if workers is None else workers
    bulk = count > 0 and conn.execute("SELECT NOT EXISTS (SELECT 1 FROM detections)"
                                      ).fetchone()[0]
    if bulk:
        suspend_text_index(conn)
    if count <= 0:
        for task in _tasks(paths):
            take(_chunk(task))
    else:
        # Spawned, not forked: the caller may have threads (the agent's writer, a server).
        with multiprocessing.get_context("spawn").Pool(count) as pool:
            pending: deque = deque()
            for task in _tasks(paths):
                pending.append(pool.apply_async(_chunk, (task,)))
                # Bounded read-ahead: memory stays a few batches, order stays the file's.
                while len(pending) > 2 * count:
                    take(pending.popleft().get())
            while pending:
                take(pending.popleft().get())
    if bulk:
        resume_text_index(conn)
    if retention is not None:
        prune(conn, retention)
    # Bounded ANALYZE: the planner's statistics without reading a million rows.
    conn.execute("PRAGMA analysis_limit = 1000")
    conn.execute("ANALYZE")
    return report
