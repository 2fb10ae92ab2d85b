"""Rate limits and cooldowns, keyed on structured fields (rule, container, pod, process
identity, target object) — never on an alert's output text."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

Clock = Callable[[], float]


class TokenBucket:
    """`burst` tokens at most, refilled at `rate` tokens per `per` seconds."""

    def __init__(self, rate: int, per: float, burst: int, clock: Clock = time.monotonic):
        self.capacity = float(burst)
        self.refill = rate / per
        self.clock = clock
        self.tokens = float(burst)
        self.stamp = clock()
        self.lock = threading.Lock()

    def take(self) -> bool:
        """Consume one token if there is one."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.refill)
            self.stamp = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


class Cooldowns:
    """Per-key quiet periods: after an action on a target, the same action on the same
    target is skipped until the cooldown expires."""

    def __init__(self, clock: Clock = time.monotonic, max_keys: int = 100_000):
        self.clock = clock
        self.until: dict[Hashable, float] = {}
        self.max_keys = max_keys
        self.lock = threading.Lock()

    def active(self, key: Hashable) -> float:
        """Seconds left in `key`'s cooldown (0 when none)."""
        with self.lock:
            left = self.until.get(key, 0.0) - self.clock()
            return left if left > 0 else 0.0

    def claim(self, key: Hashable, seconds: float) -> float:
        """Atomically: the seconds left of `key`'s cooldown, or 0 after starting it (two
        threads acting on one target: only one claims it). `release` it if not acted."""
        with self.lock:
            now = self.clock()
            left = self.until.get(key, 0.0) - now
            if left > 0:
                return left
            if len(self.until) >= self.max_keys:
                self.until = {k: t for k, t in self.until.items() if t > now}
            self.until[key] = now + seconds
            return 0.0

    def release(self, key: Hashable) -> None:
        """Undo a claim whose action did not act (failed, refused, skipped)."""
        with self.lock:
            self.until.pop(key, None)

    def start(self, key: Hashable, seconds: float) -> None:
        with self.lock:
            now = self.clock()
            if len(self.until) >= self.max_keys:
                self.until = {k: t for k, t in self.until.items() if t > now}
            self.until[key] = now + seconds
