"""Rebuild (or top up) the audit store from JSONL audit logs.

A line that is not JSON, is cut short, or is not an audit record is reported as
`FILE:LINE:COL: reason` and skipped; every other line is imported. Importing a log twice adds
nothing the second time.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from enforcer.errors import Diagnostic
from enforcer.store.ingest import apply_batch
from enforcer.store.mapping import Mapped, RecordError, map_record
from enforcer.store.retention import Retention, prune

BATCH = 20_000


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
    try:
        return map_record(value)
    except RecordError as exc:
        return Diagnostic(path, lineno, 1, f"{exc}; line skipped")


def import_files(conn: sqlite3.Connection, paths: Iterable[str | Path], *,
                 retention: Retention | None = None,
                 on_skip: Callable[[Diagnostic], None] | None = None) -> ImportReport:
    """Import every record of the JSONL files at `paths` into the open store `conn`."""
    report = ImportReport()
    batch: list[Mapped] = []
    for path in paths:
        name = str(path)
        with open(path, "rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                report.lines += 1
                result = _decode(name, lineno, raw)
                if result is None:
                    continue
                if isinstance(result, Diagnostic):
                    report.skipped.append(result)
                    if on_skip:
                        on_skip(result)
                    continue
                batch.append(result)
                if len(batch) >= BATCH:
                    report.imported += apply_batch(conn, batch)
                    batch = []
    if batch:
        report.imported += apply_batch(conn, batch)
    if retention is not None:
        prune(conn, retention)
    # Bounded ANALYZE: the planner's statistics without reading a million rows.
    conn.execute("PRAGMA analysis_limit = 1000")
    conn.execute("ANALYZE")
    return report
