"""The front end both store writers share: a bounded queue the agent puts audit records into,
and the counting that lets `flush` wait for them.

It is an AuditSink (`record`, `close`), so the agent adds a writer next to the JSONL log
with `FanOut(jsonl, writer)`, and it takes the alerts themselves through `submit_alert`.
Detection and the responder never wait on a store: `submit` puts into the queue and returns
at once; a full queue drops the record and counts it (the JSONL audit log still has it).
A subclass runs the thread that takes batches (`_take`) and says when they are done
(`_done_with`).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from enforcer.alert import Alert
from enforcer.store.mapping import alert_record

_STOP = object()


class QueuedRecordWriter:
    """A bounded queue of audit records, drained in batches by a subclass's thread."""

    def __init__(self, *, queue_size: int, batch_size: int, flush_interval_s: float):
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.dropped = 0  # queue full: not stored (the JSONL log still has it)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._flushed = threading.Condition()
        self._submitted = 0
        self._done = 0
        self._thread = threading.Thread()  # replaced by _start

    def _start(self, name: str, target: Any, *args: Any) -> None:
        self._thread = threading.Thread(target=target, args=args, name=name, daemon=True)
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
        """Wait until everything submitted so far is handled (see the subclass); False on
        timeout."""
        deadline = time.monotonic() + timeout
        with self._flushed:
            target = self._submitted
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._flushed.wait(left)
        return True

    def _stop(self, timeout: float) -> None:
        """Ask the thread to finish what is queued and end; wait up to `timeout`."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _take(self) -> tuple[list[Any], bool]:
        """The next batch (waits up to flush_interval_s for its first record), and whether
        the thread is asked to stop after it."""
        items: list[Any] = []
        try:
            items.append(self._queue.get(timeout=self.flush_interval_s))
            while len(items) < self.batch_size:
                items.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        kept = [item for item in items if item is not _STOP]
        return kept, len(kept) != len(items)

    def _done_with(self, count: int) -> None:
        """`count` records taken by `_take` are handled: wake `flush`."""
        with self._flushed:
            self._done += count
            self._flushed.notify_all()
