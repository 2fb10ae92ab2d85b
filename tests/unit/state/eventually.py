"""Waiting in tests for what a registry's background threads do."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(pred: Callable[[], object], timeout: float = 5.0) -> bool:
    """Whether `pred()` becomes true within `timeout` seconds (checked every 10 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False
