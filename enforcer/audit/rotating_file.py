"""An append-only JSONL file, flushed per record, rotated by size, never dropping a record.

When the current file would grow past `max_bytes`, it is closed and renamed to
`NAME.YYYYmmddTHHMMSSZ.N` (N making names unique within a second) and a fresh NAME is
opened. Rotated files are never deleted here: pruning an audit trail is the operator's
decision (logrotate, a sidecar shipping them away), not the agent's. A record is never split
across files, and a single record larger than `max_bytes` still gets written, alone.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_MAX_BYTES = 100 * 1024 * 1024

log = logging.getLogger(__name__)


class RotatingJsonl:
    """Thread-safe writer of one JSON object per line."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES,
                 fsync: bool = False):
        if max_bytes < 1:
            raise ValueError("audit max_bytes must be positive")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - lives with self
        self._size = self._file.seek(0, os.SEEK_END)
        self.written = 0
        self.rotations = 0

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record and flush it to the OS (and to disk, with fsync=True).

        Raises OSError (disk full, file removed from under us) for the caller to surface;
        nothing is silently lost.
        """
        line = (json.dumps(record, separators=(",", ":"), sort_keys=False, default=str)
                + "\n").encode()
        with self._lock:
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
            # Unbuffered: one write() per record reaches the kernel now, whole.
            self._file.write(line)
            if self.fsync:
                os.fsync(self._file.fileno())
            self._size += len(line)
            self.written += 1

    def _rotate(self) -> None:
        self._file.close()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        n = 0
        while True:
            target = self.path.with_name(f"{self.path.name}.{stamp}.{n}")
            if not target.exists():
                break
            n += 1
        os.rename(self.path, target)
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self._size = 0
        self.rotations += 1

    def files(self) -> list[Path]:
        """Rotated files oldest first, then the current one."""
        rotated = sorted(self.path.parent.glob(self.path.name + ".*"),
                         key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [*rotated, self.path]

    def close(self) -> None:
        with self._lock:
            self._file.close()


class RotatingJsonlAudit:
    """The responder's JSONL audit sink (`AuditSink`), rotated by size, never dropping.

    Same line format as enforcer.audit.jsonl.JsonlAudit (`rec.as_dict()`, sorted keys).
    `record` never raises, as the sink contract asks: a write that fails (disk full) is
    counted in `failures` and logged, and the responder goes on deciding.
    """

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES,
                 fsync: bool = False):
        self.file = RotatingJsonl(path, max_bytes=max_bytes, fsync=fsync)
        self.path = self.file.path
        self.failures = 0

    @property
    def count(self) -> int:
        return self.file.written

    def record(self, rec: Any) -> None:
        doc = rec.as_dict() if hasattr(rec, "as_dict") else dict(rec)
        try:
            self.file.write(dict(sorted(doc.items())))
        except (OSError, ValueError) as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 1000 == 0:
                log.error("audit log %s: %d record(s) could not be written: %s",
                          self.path, self.failures, exc)

    def close(self) -> None:
        self.file.close()
