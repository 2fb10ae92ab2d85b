"""The global circuit breaker: a budget of destructive actions per window. Once spent, the
agent turns itself into dry-run — for good, until restarted — and says so loudly."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class Budget:
    """At most `limit` destructive actions per `window` seconds, across all policies."""

    def __init__(self, limit: int = 20, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self.spent: deque[float] = deque()
        self.tripped = False
        self.tripped_reason = ""
        self.lock = threading.Lock()

    def consume(self) -> bool:
        """Spend one unit for a real destructive action. False (and tripped, from then on)
        when the budget is exhausted."""
        with self.lock:
            if self.tripped:
                return False
            now = self.clock()
            while self.spent and self.spent[0] <= now - self.window:
                self.spent.popleft()
            if len(self.spent) >= self.limit:
                self.tripped = True
                self.tripped_reason = (f"more than {self.limit} destructive actions in "
                                       f"{self.window:g}s")
                return False
            self.spent.append(now)
            return True
