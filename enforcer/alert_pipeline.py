"""What happens to each alert after a rule matched (or Falco sent one), in order, on the
detection thread, without waiting on anything slow:

1. the alert gets its trace id (so every output, audit record and span carries it);
2. it is counted (Prometheus, and Falco's end-of-run summary);
3. it is queued for every output (each output has its own bounded queue);
4. it is handed to the responder (its own bounded queue).

The pipeline is itself an output (`emit`, `flush`, `close`), so the live agent takes it as
its only output, and the falco-http input calls `emit` for each alert it receives.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from enforcer.alert import Alert
from enforcer.audit.tracing import Tracer
from enforcer.metrics import Metrics
from enforcer.outputs.dispatcher import Dispatcher
from enforcer.outputs.summary import AlertStats

log = logging.getLogger(__name__)


class Submit(Protocol):
    def submit(self, alert: Alert) -> Any: ...


class AlertPipeline:
    def __init__(self, dispatcher: Dispatcher, tracer: Tracer | None = None,
                 metrics: Metrics | None = None, responder: Submit | None = None,
                 stats: AlertStats | None = None):
        self.dispatcher = dispatcher
        self.tracer = tracer
        self.metrics = metrics
        self.responder = responder
        self.stats = stats if stats is not None else AlertStats()
        self._stats_lock = threading.Lock()  # falco-http calls emit from several threads
        # Maps a rule name to the name it is counted under (metrics, summary); the falco-http
        # input sets it so that made-up rule names cannot grow the label set.
        self.rule_label: Callable[[str], str] | None = None

    def emit(self, alert: Alert) -> Alert:
        """Stamp, count, dispatch, respond; returns the alert as outputs saw it."""
        if self.tracer is not None:
            alert = self.tracer.stamp(alert)
        label = alert.rule if self.rule_label is None else self.rule_label(alert.rule)
        if self.metrics is not None:
            # an unknown rule's tags are the sender's to choose: as unbounded as its name
            tags = alert.tags if label == alert.rule else ()
            self.metrics.rule_matched(label, alert.priority.display, alert.source, tags)
        with self._stats_lock:
            self.stats.record(alert, rule=label)
        self.dispatcher.dispatch(alert)
        if self.responder is not None:
            self.responder.submit(alert)
        return alert

    def flush(self) -> None:
        """Outputs flush on their own workers; nothing to do on the detection thread."""

    def close(self, timeout: float = 5.0) -> None:
        left = self.dispatcher.close(timeout)
        for name, n in left.items():
            log.warning("output %s: %d alert(s) still undelivered at stop", name, n)
