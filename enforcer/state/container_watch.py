"""Container metadata ahead of time: a background thread follows the runtime's event stream
(`GET /events` of the Docker-compatible API that docker and `podman system service` serve)
and, as each container is created or started, reads its metadata into the registry, so
the container's first processes already find it there.

The stream breaks when the runtime restarts (or is not there yet): the watcher reconnects
with backoff and asks the runtime to replay what it missed (`since` its last event).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from enforcer.state.containers import ContainerRegistry

log = logging.getLogger(__name__)

ACTIONS = ("create", "start")
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Stream(Protocol):
    """An open event stream: iterate for events; close() from any thread ends it."""

    def __iter__(self) -> Any: ...
    def close(self) -> None: ...


# since (unix seconds, or None for "from now") -> an open stream; raises OSError
Subscribe = Callable[[int | None], Stream]


class ContainerWatcher:
    """Feeds `registry` from the runtime's container events until stopped."""

    def __init__(self, registry: ContainerRegistry, subscribe: Subscribe,
                 backoff: Iterable[float] = BACKOFF):
        self.registry = registry
        self._subscribe = subscribe
        self._backoff = tuple(backoff)
        self._stop = threading.Event()
        self._stream: Stream | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self.connections = 0
        self.events = 0
        self._since: int | None = None

    def start(self) -> None:
        """Start following the stream on a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="container-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop following (idempotent): the open stream is closed under the reader."""
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                stream = self._subscribe(self._since)
            except OSError as exc:
                log.debug("container events: cannot subscribe: %s", exc)
                failures += 1
                self._stop.wait(self._backoff[min(failures, len(self._backoff)) - 1])
                continue
            with self._lock:
                self._stream = stream
            if self._stop.is_set():
                stream.close()
                return
            if self._since is None:
                self._since = int(time.time())
            self.connections += 1
            self.connected.set()
            self.registry.watched = True
            failures = 0
            try:
                for event in stream:
                    self._on_event(event)
            except OSError as exc:
                log.debug("container events: stream broken: %s", exc)
            finally:
                self.connected.clear()
                self.registry.watched = False
                stream.close()
                with self._lock:
                    self._stream = None
            if not self._stop.is_set():
                failures += 1
                self._stop.wait(self._backoff[min(failures, len(self._backoff)) - 1])

    def _on_event(self, event: dict[str, Any]) -> None:
        actor = event.get("Actor") or {}
        full_id = actor.get("ID") or event.get("id") or ""
        action = event.get("Action") or event.get("status") or ""
        if (event.get("Type") or "container") != "container" or action not in ACTIONS:
            return
        self.events += 1
        stamp = event.get("time")
        if isinstance(stamp, int):
            self._since = stamp  # a reconnect replays from here (twice-seen is harmless)
        attributes = {k: v for k, v in (actor.get("Attributes") or {}).items()
                      if isinstance(v, str)}
        try:
            self.registry.prefetch(full_id, attributes, refresh=action == "start")
        except Exception:  # noqa: BLE001 - one odd answer must not end the watch
            log.exception("container events: prefetch of %s failed", full_id[:12])
