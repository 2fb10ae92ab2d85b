"""The durable audit log: JSON Lines, append-only, one record per line, flushed per record."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import IO, Any

from enforcer.audit.record import AuditRecord


class JsonlAudit:
    """Appends each record as one JSON object per line and flushes it before returning.

    `path` "-" writes to stderr. Opened with O_APPEND so that concurrent writers and
    log shippers never see a torn or overwritten line."""

    def __init__(self, path: str | Path, fsync: bool = False):
        self.path = str(path)
        self.fsync = fsync
        self.lock = threading.Lock()
        self.count = 0
        self.failures = 0
        self._handle: IO[str]
        if self.path == "-":
            self._handle = sys.stderr
            self._owned = False
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._handle = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
            self._owned = True

    def record(self, rec: AuditRecord) -> None:
        line = json.dumps(rec.as_dict(), sort_keys=True, default=_fallback,
                          separators=(",", ":"))
        with self.lock:
            try:
                self._handle.write(line + "\n")
                self._handle.flush()
                if self.fsync and self._owned:
                    os.fsync(self._handle.fileno())
                self.count += 1
            except (OSError, ValueError):
                # The responder must keep deciding even when the disk is full; the
                # failure count is exported so that it is seen.
                self.failures += 1

    def close(self) -> None:
        with self.lock:
            if self._owned and not self._handle.closed:
                self._handle.close()


def _fallback(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def read_audit(path: str | Path) -> list[dict[str, Any]]:
    """All records of an audit file (for `enforcer` commands and tests)."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
