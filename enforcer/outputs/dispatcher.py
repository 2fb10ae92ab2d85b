"""Fan alerts out to outputs without ever making detection wait.

Each output gets its own bounded queue and worker thread. `dispatch()` only filters and
enqueues: when an output's queue is full (a webhook that hangs, a program that is slow) the
alert is dropped *for that output only*, counted, and detection goes on. Per output, alerts
keep their order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from enforcer.alert import Alert
from enforcer.outputs.extra_fields import with_extra_fields
from enforcer.priority import Priority

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 1000


class AlertOutput(Protocol):
    """Anything that delivers one alert; may block and may raise."""

    name: str

    def emit(self, alert: Alert) -> None: ...


class _Callable:
    """Adapts a plain function (or an output whose method is not `emit`)."""

    def __init__(self, name: str, fn: Callable[[Alert], object]):
        self.name = name
        self._fn = fn

    def emit(self, alert: Alert) -> None:
        self._fn(alert)


def as_output(name: str, fn: Callable[[Alert], object]) -> AlertOutput:
    """Wrap a function `fn(alert)` as an output called `name`."""
    return _Callable(name, fn)


@dataclass
class OutputStats:
    delivered: int = 0
    dropped: int = 0
    failed: int = 0
    filtered: int = 0


@dataclass
class OutputSpec:
    """One output with its own minimum priority and queue bound."""

    output: AlertOutput
    min_priority: Priority = Priority.DEBUG
    queue_size: int = DEFAULT_QUEUE_SIZE
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or getattr(self.output, "name", type(self.output).__name__)
        if self.queue_size < 1:
            raise ValueError(f"output {self.name}: queue size must be at least 1")


_STOP = object()


@dataclass
class _Lane:
    spec: OutputSpec
    queue: queue.Queue[object]
    stats: OutputStats = field(default_factory=OutputStats)
    thread: threading.Thread | None = None
    # dispatch() may run on several threads (the agent loop, falco-http request handlers)
    lock: threading.Lock = field(default_factory=threading.Lock)
    warned_at: float = -1e9


class MetricsSink(Protocol):
    def output_dropped(self, output: str) -> None: ...
    def output_failed(self, output: str) -> None: ...


class Dispatcher:
    """Non-blocking fan-out of alerts to outputs, each filtered by its minimum priority."""

    def __init__(self, specs: list[OutputSpec], extra_fields: Mapping[str, str] | None = None,
                 metrics: MetricsSink | None = None):
        names = [s.name for s in specs]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"two outputs are named {sorted(dupes)}; give each a distinct name")
        self._lanes = [_Lane(s, queue.Queue(maxsize=s.queue_size)) for s in specs]
        self._extra = dict(extra_fields or {})
        self._metrics = metrics
        self._closed = False

    def start(self) -> Dispatcher:
        for lane in self._lanes:
            lane.thread = threading.Thread(target=self._work, args=(lane,),
                                           name=f"output-{lane.spec.name}", daemon=True)
            lane.thread.start()
        return self

    def dispatch(self, alert: Alert) -> None:
        """Hand `alert` to every output whose minimum priority it meets. Never blocks."""
        alert = with_extra_fields(alert, self._extra)
        for lane in self._lanes:
            if not alert.priority.at_least(lane.spec.min_priority):
                with lane.lock:
                    lane.stats.filtered += 1
                continue
            try:
                lane.queue.put_nowait(alert)
            except queue.Full:
                with lane.lock:
                    lane.stats.dropped += 1
                    dropped = lane.stats.dropped
                if self._metrics is not None:
                    self._metrics.output_dropped(lane.spec.name)
                now = time.monotonic()
                if now - lane.warned_at >= 60.0:  # say it, but not once per alert
                    lane.warned_at = now
                    log.warning("output %s is not keeping up: %d alert(s) dropped so far "
                                "(queue of %d full)", lane.spec.name, dropped,
                                lane.spec.queue_size)

    def stats(self) -> dict[str, OutputStats]:
        """Per-output counts so far (delivered, dropped, failed, filtered)."""
        return {lane.spec.name: lane.stats for lane in self._lanes}

    def close(self, timeout: float = 5.0) -> dict[str, int]:
        """Deliver what is queued, within `timeout` seconds overall; returns, per output, how
        many alerts were still undelivered when time ran out."""
        if self._closed:
            return {}
        self._closed = True
        deadline = time.monotonic() + timeout
        for lane in self._lanes:
            try:
                lane.queue.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                pass
        left: dict[str, int] = {}
        for lane in self._lanes:
            if lane.thread is not None:
                lane.thread.join(timeout=max(0.0, deadline - time.monotonic()))
            pending = sum(1 for item in list(lane.queue.queue) if item is not _STOP)
            if pending:
                left[lane.spec.name] = pending
            closer = getattr(lane.spec.output, "close", None)
            if callable(closer) and not (lane.thread and lane.thread.is_alive()):
                try:
                    closer()
                except Exception as exc:  # noqa: BLE001
                    log.warning("output %s did not close cleanly: %s", lane.spec.name, exc)
        return left

    def _work(self, lane: _Lane) -> None:
        while True:
            item = lane.queue.get()
            if item is _STOP:
                return
            assert isinstance(item, Alert)
            try:
                lane.spec.output.emit(item)
            except Exception as exc:  # noqa: BLE001 - one bad delivery must not stop the lane
                lane.stats.failed += 1
                if self._metrics is not None:
                    self._metrics.output_failed(lane.spec.name)
                log.warning("output %s could not deliver the alert for rule %r: %s",
                            lane.spec.name, item.rule, exc)
            else:
                lane.stats.delivered += 1
