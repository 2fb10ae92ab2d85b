"""The container event watcher against scripted streams: create/start events fill the
registry, a broken stream is reopened (replaying from the last event), stop() ends it."""

from __future__ import annotations

import threading
from typing import Any

from enforcer.state.container_watch import ContainerWatcher
from enforcer.state.containers import ContainerRegistry
from tests.unit.state.eventually import eventually

CID = "ea059ccb4bf6d73ddcd52a085630d88559c496a3f845676e82a3ceaaec9c21c7"
OTHER = "127a8590207428f1c575b1d4646d8239c264dc1afc2272c463f3f5f5cf152076"


def _event(cid: str, action: str, stamp: int, **attrs: str) -> dict[str, Any]:
    return {"status": action, "id": cid, "Type": "container", "Action": action,
            "Actor": {"ID": cid, "Attributes": {"name": f"n-{cid[:4]}", "image": "busybox",
                                                **attrs}},
            "time": stamp, "timeNano": stamp * 10**9}


class Scripted:
    """A stream that yields its events, then either ends (broken) or blocks until closed."""

    def __init__(self, events: list[dict[str, Any]], then_block: bool):
        self.events = events
        self.then_block = then_block
        self.closed = threading.Event()

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield from self.events
        if self.then_block:
            self.closed.wait()

    def close(self) -> None:
        self.closed.set()


def test_events_fill_the_registry_and_a_broken_stream_is_reopened_from_its_last_event() -> None:
    inspected: list[str] = []

    def inspect(cid: str) -> dict[str, Any] | None:
        inspected.append(cid)
        return {"Name": "/from-inspect", "Config": {"Image": "busybox:1"}} if cid == CID else None

    registry = ContainerRegistry(inspect)
    calls: list[int | None] = []
    streams = [
        OSError("runtime not up yet"),
        Scripted([_event(CID, "create", 1000), {"Type": "image", "Action": "pull"},
                  _event(CID, "die", 1001)], then_block=False),  # then the runtime restarts
        Scripted([_event(OTHER, "create", 1005, app="web")], then_block=True),
    ]

    def subscribe(since: int | None) -> Scripted:
        calls.append(since)
        item = streams.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    watcher = ContainerWatcher(registry, subscribe, backoff=(0.01,))
    watcher.start()
    try:
        assert eventually(lambda: registry.get(OTHER).name is not None
                           and not registry.pending(OTHER))
        assert eventually(watcher.connected.is_set)
        info = registry.get(CID)
        assert info.name == "from-inspect" and info.image_tag == "1"
        # OTHER was gone when asked: its event's own attributes stand in
        other = registry.get(OTHER)
        assert other.name == f"n-{OTHER[:4]}" and other.labels == {"app": "web"}
        assert inspected.count(CID) == 1  # create only: `die` and image events are ignored
        assert calls[0] is None and calls[1] is None and calls[2] == 1000
        assert watcher.connections == 2 and watcher.events == 2
    finally:
        watcher.stop()
    assert not watcher.connected.is_set()
    assert watcher._thread is not None and not watcher._thread.is_alive()
