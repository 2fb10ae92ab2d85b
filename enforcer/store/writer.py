"""The agent's side of the store: a writer thread fed alerts and audit records.

The queue in front of it is the QueuedRecordWriter's (submit, record, flush): a full queue
drops the record and counts it (the JSONL audit log still has it, and `enforcer audit import`
can fill the gap). The thread writes in batches, one transaction per batch, and applies
retention now and then.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from enforcer.store.ingest import apply_batch
from enforcer.store.mapping import Mapped, RecordError, map_record
from enforcer.store.queued_writer import QueuedRecordWriter
from enforcer.store.retention import Retention, prune
from enforcer.store.schema import connect

log = logging.getLogger(__name__)


class StoreWriter(QueuedRecordWriter):
    """Write alerts and audit records to the store at `path` from a background thread."""

    def __init__(self, path: str | Path, *, retention: Retention | None = None,
                 queue_size: int = 10_000, batch_size: int = 500,
                 flush_interval_s: float = 0.5, prune_interval_s: float = 300.0):
        super().__init__(queue_size=queue_size, batch_size=batch_size,
                         flush_interval_s=flush_interval_s)
        self.path = Path(path)
        self.retention = retention or Retention()
        self.prune_interval_s = prune_interval_s
        self.failed = 0  # a batch the database refused (e.g. disk full)
        self.rejected = 0  # not an audit record
        self.written = 0
        conn = connect(self.path)  # fail now, in the caller, if the path is unusable
        prune(conn, self.retention)  # a store left by an earlier run may be past its bounds
        self._start("audit-store-writer", self._run, conn)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread (also the AuditSink's close)."""
        self._stop(timeout)

    def _run(self, conn: Any) -> None:
        last_prune = time.monotonic()
        stopping = False
        try:
            while not stopping:
                items, stopping = self._take()
                batch: list[Mapped] = []
                for item in items:
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
                self._done_with(len(items))
                now = time.monotonic()
                if now - last_prune >= self.prune_interval_s:
                    last_prune = now
                    try:
                        prune(conn, self.retention)
                    except Exception:
                        log.exception("audit store: retention failed")
        finally:
            conn.close()
