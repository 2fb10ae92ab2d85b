"""Bounded retries for temporary action errors (429, 5xx, timeouts), with tenacity.

A server's Retry-After (carried as TemporaryActionError.delay) is honoured, capped; without
one, waits grow exponentially with jitter. Both the number of attempts and the total time
are bounded, so a dead API server costs a known, small delay per action."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from enforcer.errors import TemporaryActionError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    max_seconds: float = 30.0
    initial_wait: float = 0.2
    max_wait: float = 10.0


@dataclass
class RetryLog:
    """What retrying cost: how many retries and each wait, for the audit record."""

    retries: int = 0
    waits: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def call_with_retries(fn: Callable[[], T], policy: RetryPolicy, log: RetryLog,
                      sleep: Callable[[float], Any] = time.sleep) -> T:
    """Call `fn`, retrying TemporaryActionError within `policy`'s bounds; other errors and
    the last temporary error propagate."""
    backoff = wait_random_exponential(multiplier=policy.initial_wait, max=policy.max_wait)
    started = time.monotonic()

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = getattr(exc, "delay", None)
        seconds = min(float(hinted), policy.max_wait) if hinted is not None else backoff(state)
        remaining = policy.max_seconds - (time.monotonic() - started)
        return max(0.0, min(seconds, remaining))

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.retries += 1
        log.waits.append(round(state.upcoming_sleep, 3))
        log.errors.append(str(exc))

    retrying = Retrying(
        retry=retry_if_exception_type(TemporaryActionError),
        stop=stop_after_attempt(policy.attempts) | stop_after_delay(policy.max_seconds),
        wait=wait, before_sleep=before_sleep, reraise=True, sleep=sleep)
    return retrying(fn)
