"""The agent's side of the store: a writer thread fed alerts and audit records.

It is an AuditSink (`record`, `close`), so the agent adds it next to the JSONL log with
`FanOut(jsonl, writer)`, and it takes the alerts themselves through `submit_alert`.

Detection never waits on the store: `submit` puts into a bounded queue and returns at once;
a full queue drops the record and counts it (the JSONL audit log still has it, and
`enforcer audit import` can fill the gap). The thread writes in batches, one transaction per
batch, and applies retention now and then.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from enforcer.alert import Alert
from enforcer.store.ingest import apply_batch
from enforcer.store.mapping import Mapped, RecordError, alert_record, map_record
from enforcer.store.retention import Retention, prune
from enforcer.store.schema import connect

log = logging.getLogger(__name__)

_STOP = object()


class StoreWriter:
    """Write alerts and audit records to the store at `path` from a background thread."""

    def __init__(self, path: str | Path, *, retention: Retention | None = None,
                 queue_size: int = 10_000, batch_size: int = 500,
                 flush_interval_s: float = 0.5, prune_interval_s: float = 300.0):
        self.path = Path(path)
        self.retention = retention or Retention()
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.prune_interval_s = prune_interval_s
        self.dropped = 0  # queue full: not stored (the JSONL log still has it)
        self.failed = 0  # a batch the database refused (e.g. disk full)
        self.rejected = 0  # not an audit record
        self.written = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._flushed = threading.Condition()
        self._submitted = 0
        self._done = 0
        conn = connect(self.path)  # fail now, in the caller, if the path is unusable
        prune(conn, self.retention)  # a store left by an earlier run may be past its bounds
        self._thread = threading.Thread(target=self._run, args=(conn,),
                                        name="audit-store-writer", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any]) -> bool:
        """Queue one audit record (a JSONL dict); False when dropped because the queue is full."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            return False
        with self._flushed:
            self._submitted += 1
        return True

    def submit_alert(self, alert: Alert) -> bool:
        """Queue an Alert as its audit record."""
        return self.submit(alert_record(alert))

    def record(self, rec: Any) -> None:
        """The responder's AuditSink interface: queue an AuditRecord (or a dict)."""
        self.submit(rec.as_dict() if hasattr(rec, "as_dict") else dict(rec))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is written; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._flushed:
            target = self._submitted
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._flushed.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread (also the AuditSink's close)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _run(self, conn: Any) -> None:
        last_prune = time.monotonic()
        stopping = False
        try:
            while not stopping:
                items: list[Any] = []
                try:
                    items.append(self._queue.get(timeout=self.flush_interval_s))
                    while len(items) < self.batch_size:
                        items.append(self._queue.get_nowait())
                except queue.Empty:
                    pass
                batch: list[Mapped] = []
                for item in items:
                    if item is _STOP:
                        stopping = True
                        continue
                    try:
                        batch.append(map_record(item))
                    except RecordError as exc:
                        self.rejected += 1
                        log.warning("audit store: record not stored: %s", exc)
                if batch:
                    try:
                        self.written += apply_batch(conn, batch)
                    except Exception:  # keep the agent running; the JSONL log has it all
                        self.failed += len(batch)
                        log.exception("audit store: batch of %d not written", len(batch))
                with self._flushed:
                    self._done += len(items) - (1 if stopping else 0)
                    self._flushed.notify_all()
                now = time.monotonic()
                if now - last_prune >= self.prune_interval_s:
                    last_prune = now
                    try:
                        prune(conn, self.retention)
                    except Exception:
                        log.exception("audit store: retention failed")
        finally:
            conn.close()
