"""An in-memory audit sink, for embedding and for the stop summary."""

from __future__ import annotations

import threading

from enforcer.audit.record import AuditRecord


class MemoryAudit:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self.lock = threading.Lock()

    def record(self, rec: AuditRecord) -> None:
        with self.lock:
            self.records.append(rec)

    def close(self) -> None:
        pass
