"""The audit store's writer on /metrics: records written, waiting, dropped and refused, and
whether the database answers (read at scrape time from the writer's own counters)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class StoreCollector(Collector):
    """Exports a StoreWriter's or PgStoreWriter's counters."""

    def __init__(self, writer: Any):
        self._writer = writer

    def collect(self) -> Iterable[Any]:
        w = self._writer
        spool = getattr(w, "spool", None)
        yield _gauge("enforcer_store_backlog_records", "Records not yet in the store: queued "
                     "in memory plus spooled on disk while the database is unreachable",
                     getattr(w, "backlog", 0))
        yield _gauge("enforcer_store_spooled_records", "Records in the local spool, waiting "
                     "for the database", spool.count if spool is not None else 0)
        yield _gauge("enforcer_store_up", "1 when the store's database is connected",
                     1 if getattr(w, "connected", True) else 0)
        yield _counter("enforcer_store_written_records", "Records written to the store",
                       getattr(w, "written", 0))
        yield _counter("enforcer_store_dropped_records", "Records not stored: queue or spool "
                       "full (the JSONL audit log still has them)",
                       getattr(w, "dropped", 0) + (spool.refused if spool is not None else 0))
        yield _counter("enforcer_store_rejected_records", "Records the store refused (not "
                       "an audit record, or a value the database rejects)",
                       getattr(w, "rejected", 0))


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text)
    family.add_metric([], value)
    return family


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text)
    family.add_metric([], value)
    return family
