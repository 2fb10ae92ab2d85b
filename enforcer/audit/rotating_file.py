"""An append-only JSONL file, flushed per record, rotated by size, that rides out a full or
failing disk without losing what it was given.

When the current file would grow past `max_bytes`, it is closed and renamed to
`NAME.YYYYmmddTHHMMSSZ.N` (N making names unique within a second) and a fresh NAME is
opened. Rotated files are never deleted here: pruning an audit trail is the operator's
decision (logrotate, a sidecar shipping them away), not the agent's. A record is never split
across files, and a single record larger than `max_bytes` still gets written, alone.

A record that cannot be written (disk full, the reopen after a rotation failed) waits in a
bounded queue, in order, and is written as soon as the disk takes it again: on the next
record, or within a second by a retry thread. A short write is completed, never left torn.
Only when the queue is full are records lost; they are counted, and a `kind: audit_gap`
record says how many once writing resumes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from enforcer.units import parse_duration

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
# Records held in memory while the disk refuses them (~0.5 KiB each): minutes of a busy
# node's decisions, a few MiB at most.
DEFAULT_MAX_PENDING = 10_000
RETRY_INTERVAL_S = 1.0
_LOG_EVERY_S = 60.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FsyncPolicy:
    """When records are forced to disk: `never` (the kernel decides; a crash of the agent
    loses nothing, a crash of the node may lose the last seconds), `always` (before each
    record returns), or every `interval` seconds (and at close)."""

    mode: str = "never"
    interval: float = 0.0

    @classmethod
    def parse(cls, text: str | bool | None) -> FsyncPolicy:
        """`never`, `always`, or a duration (`1s`, `500ms`). Raises ValueError with advice."""
        if text is None or text is False:
            return cls()
        if text is True:
            return cls("always")
        value = str(text).strip().lower()
        if value in ("never", "always"):
            return cls(value)
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise ValueError(f"audit fsync {text!r}: expected never, always or a duration "
                             "such as 1s") from None
        if seconds <= 0:
            raise ValueError(f"audit fsync {text!r}: the interval must be positive")
        return cls("interval", seconds)


class RotatingJsonl:
    """Thread-safe writer of one JSON object per line."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES,
                 fsync: FsyncPolicy | str | bool = "never",
                 max_pending: int = DEFAULT_MAX_PENDING):
        if max_bytes < 1:
            raise ValueError("audit max_bytes must be positive")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.fsync = fsync if isinstance(fsync, FsyncPolicy) else FsyncPolicy.parse(fsync)
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO | None = None
        self._size = 0
        self._open()  # at start, a log that cannot be opened is an error for the caller
        self._pending: deque[bytes] = deque()  # lines not yet (wholly) written, in order
        self._torn = False      # the file ends inside the first pending line (short write)
        self._gap = 0           # records lost since the last audit_gap record
        self._dirty = False     # written since the last fsync
        self._last_sync = time.monotonic()
        self.written = 0
        self.rotations = 0
        self.failures = 0       # write attempts that failed (each record may fail again)
        self.lost = 0           # records dropped because the queue was full
        self.last_error = ""

    @property
    def pending(self) -> int:
        """Records given but not yet written."""
        return len(self._pending)

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record and flush it to the OS (to disk, as the fsync policy says).

        Raises OSError when it could not be written now (it stays queued, and is written
        first once the disk takes writes again), for the caller to count and surface.
        """
        line = (json.dumps(record, separators=(",", ":"), sort_keys=False, default=str)
                + "\n").encode()
        with self._lock:
            if len(self._pending) >= self.max_pending:
                try:
                    self._drain()  # what waits goes first; room for this one if it can
                except OSError:
                    self.lost += 1
                    self._gap += 1
                    raise
            self._pending.append(line)
            self._drain()

    def retry(self) -> bool:
        """Try to write what is queued (and a due fsync); True when nothing is left."""
        with self._lock:
            try:
                self._drain()
            except OSError:
                return False
            return not self._pending

    def _drain(self) -> None:
        try:
            while self._pending or self._gap:
                if not self._pending:
                    self._pending.append(self._gap_line())
                    self._gap = 0
                self._write_head()
            self._sync_if_due()
        except (OSError, ValueError) as exc:
            self.failures += 1
            self.last_error = str(exc)
            if isinstance(exc, ValueError):  # closed from under us: reopen next time
                self._file = None
                raise OSError(str(exc)) from None
            raise

    def _write_head(self) -> None:
        head = self._pending[0]
        if not self._torn and self._size and self._size + len(head) > self.max_bytes:
            self._rotate()
        if self._file is None:
            self._open()
        assert self._file is not None
        written = self._file.write(head) or 0
        self._size += written
        self._dirty = True
        if written < len(head):
            # A short write (the disk filled up mid-line): the rest goes first next time,
            # so the line is completed in place, never torn.
            self._pending[0] = head[written:]
            self._torn = True
            return
        self._pending.popleft()
        self._torn = False
        self.written += 1
        if self.fsync.mode == "always":
            os.fsync(self._file.fileno())
            self._dirty = False

    def _rotate(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        n = 0
        while True:
            target = self.path.with_name(f"{self.path.name}.{stamp}.{n}")
            if not target.exists():
                break
            n += 1
        if self._file is not None:
            if self.fsync.mode != "never" and self._dirty:
                os.fsync(self._file.fileno())
                self._dirty = False
        try:
            os.rename(self.path, target)
        except FileNotFoundError:
            pass  # removed from under us: the reopen makes a new one
        except OSError as exc:
            # The record matters more than the size limit: keep appending, rotate later.
            self.failures += 1
            self.last_error = f"rotation: {exc}"
            log.warning("audit log %s: cannot rotate (%s); writing on", self.path, exc)
            self._size = 0
            return
        if self._file is not None:
            self._file.close()
            self._file = None
        self.rotations += 1
        self._open()  # may fail (no space for a new file): retried before the next write

    def _open(self) -> None:
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - lives with self
        self._size = self._file.seek(0, os.SEEK_END)

    def _gap_line(self) -> bytes:
        doc = {"kind": "audit_gap", "outcome": "dropped", "lost": self._gap,
               "reason": f"the audit log could not be written and more than "
                         f"{self.max_pending} records were waiting",
               "time_ns": time.time_ns()}
        return (json.dumps(doc, separators=(",", ":")) + "\n").encode()

    def _sync_if_due(self) -> None:
        if (self.fsync.mode == "interval" and self._dirty and self._file is not None
                and time.monotonic() - self._last_sync >= self.fsync.interval):
            os.fsync(self._file.fileno())
            self._dirty = False
            self._last_sync = time.monotonic()

    def files(self) -> list[Path]:
        """Rotated files oldest first, then the current one."""
        rotated = sorted(self.path.parent.glob(self.path.name + ".*"),
                         key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [*rotated, self.path]

    def close(self) -> None:
        """Write what is queued if the disk lets us, force it to disk (unless the policy is
        never), and close. Records that still cannot be written are logged as lost."""
        with self._lock:
            try:
                self._drain()
                if self._file is not None and self.fsync.mode != "never" and self._dirty:
                    os.fsync(self._file.fileno())
            except OSError as exc:
                log.error("audit log %s: %d record(s) could not be written before exit: %s",
                          self.path, len(self._pending) + self._gap, exc)
            if self._file is not None:
                self._file.close()
                self._file = None


class RotatingJsonlAudit:
    """The responder's JSONL audit sink (`AuditSink`), rotated by size, never dropping
    while its queue has room.

    Same line format as enforcer.audit.jsonl.JsonlAudit (`rec.as_dict()`, sorted keys).
    `record` never raises, as the sink contract asks: a write that fails (disk full) is
    counted, logged once a minute, shown by `problem()` (for /readyz) and by `collector()`
    (for /metrics), and retried every second; the responder goes on deciding.
    """

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES,
                 fsync: FsyncPolicy | str | bool = "never",
                 max_pending: int = DEFAULT_MAX_PENDING):
        self.file = RotatingJsonl(path, max_bytes=max_bytes, fsync=fsync,
                                  max_pending=max_pending)
        self.path = self.file.path
        self._closed = threading.Event()
        self._retrier: threading.Thread | None = None
        self._logged_at = 0.0
        if self.file.fsync.mode == "interval":
            self._start_retrier()  # also makes the interval fsync happen when idle

    @property
    def count(self) -> int:
        return self.file.written

    @property
    def failures(self) -> int:
        return self.file.failures

    def record(self, rec: Any) -> None:
        doc = rec.as_dict() if hasattr(rec, "as_dict") else dict(rec)
        try:
            self.file.write(dict(sorted(doc.items())))
        except OSError as exc:
            self._start_retrier()
            now = time.monotonic()
            if now - self._logged_at >= _LOG_EVERY_S:
                self._logged_at = now
                log.error("audit log %s: cannot write (%s): %d record(s) waiting, %d failed "
                          "attempt(s), %d lost so far; retrying every %gs", self.path, exc,
                          self.file.pending, self.file.failures, self.file.lost,
                          RETRY_INTERVAL_S)

    def problem(self) -> str | None:
        """What is wrong with the log now (records waiting for the disk), or None."""
        pending = self.file.pending
        if not pending:
            return None
        return (f"audit log {self.path}: {pending} record(s) not yet written: "
                f"{self.file.last_error}")

    def collector(self) -> Collector:
        """Prometheus collector of the log's failures, waiting and lost records."""
        return _AuditCollector(self.file)

    def _start_retrier(self) -> None:
        if self._retrier is None and not self._closed.is_set():
            self._retrier = threading.Thread(target=self._retry_loop, name="enforcer-audit",
                                             daemon=True)
            self._retrier.start()

    def _retry_loop(self) -> None:
        while not self._closed.wait(RETRY_INTERVAL_S):
            self.file.retry()

    def close(self) -> None:
        self._closed.set()
        self.file.close()


class _AuditCollector(Collector):
    def __init__(self, file: RotatingJsonl):
        self._file = file

    def collect(self) -> Iterable[Metric]:
        failures = CounterMetricFamily(
            "enforcer_audit_write_failures", "Attempts to write the audit log that failed "
            "(disk full, failed rotation); the records wait and are retried")
        failures.add_metric([], self._file.failures)
        yield failures
        pending = GaugeMetricFamily(
            "enforcer_audit_pending_records", "Audit records waiting for the disk")
        pending.add_metric([], self._file.pending)
        yield pending
        lost = CounterMetricFamily(
            "enforcer_audit_records_lost", "Audit records dropped because too many were "
            "waiting for the disk")
        lost.add_metric([], self._file.lost)
        yield lost
