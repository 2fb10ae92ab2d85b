"""The slow lane: snapshot, notify and the Kubernetes actions run here, off the kill lane.

Bounded, and fair between policies and workloads: each (policy, workload) has its own
sub-queue and the pool's threads take from the sub-queues in turn (round robin), so one
workload's flood of matches cannot take the room, or the turns, that another workload's
responses need. When it is full, the least important work goes first: a queued notify, then
a queued snapshot, taken from the longest sub-queue (the flooding one); if everything queued
matters more than the newcomer, the newcomer is dropped. Every drop is handed to `on_drop`
(the responder audits it) on one of the pool's threads, never on the caller's: `put` does
no I/O, so the detection thread may call it.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

#: how much a piece of slow work matters when room runs out (higher is kept longer)
IMPORTANCE = {"notify": 0, "snapshot": 1}
DEFAULT_IMPORTANCE = 2  # Kubernetes actions, quarantine, cordon…: never dropped for the above


def importance(actions: list[str]) -> int:
    """A batch of actions matters as much as its most important one."""
    return max((IMPORTANCE.get(a, DEFAULT_IMPORTANCE) for a in actions), default=0)


@dataclass
class _Entry:
    item: Any
    importance: int


class FairPool:
    """`put(key, item, importance)`; `threads` workers call `run(item)`."""

    def __init__(self, run: Callable[[Any], None], on_drop: Callable[[Any, str], None],
                 capacity: int = 256, threads: int = 2, name: str = "enforcer-slow"):
        self.run = run
        self.on_drop = on_drop
        self.capacity = capacity
        self.threads_wanted = threads
        self.name = name
        self.queues: OrderedDict[Hashable, deque[_Entry]] = OrderedDict()
        self.size = 0
        self.unfinished = 0
        self.stopping = False
        self.cond = threading.Condition()
        self.threads: list[threading.Thread] = []
        self.dropped = 0
        self.busy: set[Hashable] = set()  # keys being run: one at a time, in order
        self.drops: deque[tuple[Any, str]] = deque()  # to report, on a pool thread

    def start(self) -> FairPool:
        for i in range(self.threads_wanted):
            thread = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def put(self, key: Hashable, item: Any, weight: int) -> bool:
        """Queue `item` under `key`; False (and on_drop) when it is the one dropped."""
        victim: _Entry | None = None
        with self.cond:
            if self.size >= self.capacity:
                victim = self._evict(weight)
                if victim is None:
                    self.dropped += 1
                    dropped_new = True
                else:
                    dropped_new = False
            else:
                dropped_new = False
            if not dropped_new:
                self.queues.setdefault(key, deque()).append(_Entry(item, weight))
                self.size += 1
                self.unfinished += 1
                self.cond.notify()
            if victim is not None:
                self.drops.append((victim.item, f"slow lane full ({self.capacity}): dropped "
                                                "for more important work"))
            if dropped_new:
                self.drops.append((item, f"slow lane full ({self.capacity}) of work at "
                                         "least as important"))
            added = (victim is not None) + dropped_new
            if added:
                self.unfinished += added  # reported before join() returns
                self.cond.notify()
        return not dropped_new

    def join(self) -> None:
        """Until every queued item has run (tests, replay, drain)."""
        with self.cond:
            while self.unfinished:
                self.cond.wait()

    def stop(self, timeout: float = 10.0) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        for thread in self.threads:
            thread.join(timeout)
        self.threads = []

    def take_all(self) -> list[tuple[Any, str | None]]:
        """Everything still waiting, removed (after stop(): what its threads did not reach
        in time), each with the reason it was already dropped for, or None; the caller
        accounts for them."""
        with self.cond:
            left: list[tuple[Any, str | None]] = list(self.drops)
            left += [(entry.item, None) for entries in self.queues.values()
                     for entry in entries]
            self.unfinished -= len(left)
            self.drops.clear()
            self.queues.clear()
            self.size = 0
            self.cond.notify_all()
        return left

    # -- inside -------------------------------------------------------------------------
    def _evict(self, weight: int) -> _Entry | None:
        """Remove the least important queued entry that matters less than `weight`, or as
        much, from the longest sub-queue; None when there is none."""
        best: tuple[tuple[int, int], Hashable, int] | None = None
        for key, entries in self.queues.items():
            for pos in range(len(entries) - 1, -1, -1):  # the newest first, on ties
                entry = entries[pos]
                if entry.importance > weight:
                    continue
                rank = (entry.importance, -len(entries))
                if best is None or rank < best[0]:
                    best = (rank, key, pos)
        if best is None:
            return None
        _, key, pos = best
        entries = self.queues[key]
        victim = entries[pos]
        del entries[pos]
        if not entries:
            del self.queues[key]
        self.size -= 1
        self.unfinished -= 1
        return victim

    def _take(self) -> tuple[Hashable, Any] | None:
        """The next (key, item), round robin over the sub-queues whose key is not being
        run (a key's items run in order); None when all are (call with the lock held)."""
        key = next((k for k in self.queues if k not in self.busy), None)
        if key is None:
            return None
        entries = self.queues.pop(key)
        entry = entries.popleft()
        if entries:
            self.queues[key] = entries  # to the back of the turn
        self.size -= 1
        self.busy.add(key)
        return key, entry.item

    def _work(self) -> None:
        while True:
            with self.cond:
                while self.drops:
                    dropped = list(self.drops)
                    self.drops.clear()
                    self.cond.release()
                    try:
                        for item, why in dropped:
                            self._drop(item, why)
                    finally:
                        self.cond.acquire()
                    self.unfinished -= len(dropped)
                    self.cond.notify_all()
                taken = self._take()
                while taken is None:
                    if self.stopping and not self.queues and not self.drops:
                        return
                    self.cond.wait()
                    if self.drops:
                        break
                    taken = self._take()
                if taken is None:
                    continue
            key, item = taken
            try:
                self.run(item)
            except Exception as exc:  # never let one action stop the lane
                print(f"enforcer: slow lane error: {exc!r}", file=sys.stderr)
            finally:
                with self.cond:
                    self.busy.discard(key)
                    self.unfinished -= 1
                    self.cond.notify_all()

    def _drop(self, item: Any, reason: str) -> None:
        try:
            self.on_drop(item, reason)
        except Exception as exc:
            print(f"enforcer: slow lane drop hook failed: {exc!r}", file=sys.stderr)
