"""Readiness: the conditions the agent must meet before a DaemonSet probe calls it ready.

The agent sets each condition as its start-up progresses (`probes_attached` once the BPF
programs are attached, `policies_loaded` once rules and policies are in place); /readyz
answers 200 only when every required condition holds, and otherwise says which do not.
Degradations (the agent is missing events) are reported without making the pod unready:
restarting the agent would not bring the events back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

PROBES_ATTACHED = "probes_attached"
POLICIES_LOADED = "policies_loaded"
DEFAULT_CONDITIONS = (PROBES_ATTACHED, POLICIES_LOADED)


@dataclass(frozen=True)
class Condition:
    ok: bool
    detail: str = ""


class Readiness:
    """Thread-safe set of named start-up conditions plus free-text warnings."""

    def __init__(self, required: tuple[str, ...] = DEFAULT_CONDITIONS):
        self._lock = threading.Lock()
        self._conditions: dict[str, Condition] = {
            name: Condition(False, "not yet") for name in required}
        self._warnings: dict[str, str] = {}
        self._watches: dict[str, Callable[[], str | None]] = {}
        self._checks: dict[str, Callable[[], str | None]] = {}

    def set(self, name: str, ok: bool = True, detail: str = "") -> None:
        """Record the state of a condition (adds it to the required set if new)."""
        with self._lock:
            self._conditions[name] = Condition(ok, detail)

    def warn(self, key: str, message: str | None) -> None:
        """Set (or clear, with None) a degradation shown in /readyz's detail."""
        with self._lock:
            if message is None:
                self._warnings.pop(key, None)
            else:
                self._warnings[key] = message

    def watch(self, key: str, check: Callable[[], str | None]) -> None:
        """A degradation computed when asked (e.g. from drop counters): `check()` returns
        the warning text, or None when all is well."""
        with self._lock:
            self._watches[key] = check

    def require(self, key: str, check: Callable[[], str | None]) -> None:
        """A condition computed when asked: `check()` returns what is wrong (the pod is
        unready while it does), or None when all is well."""
        with self._lock:
            self._checks[key] = check

    @property
    def ready(self) -> bool:
        return bool(self.snapshot()["ready"])

    def snapshot(self) -> dict[str, object]:
        """JSON-ready view: {"ready", "conditions": {name: {ok, detail}}, "warnings"}."""
        with self._lock:
            conditions = {name: {"ok": c.ok, "detail": c.detail}
                          for name, c in self._conditions.items()}
            warnings = dict(self._warnings)
            watches = dict(self._watches)
            checks = dict(self._checks)
        for key, check in checks.items():
            try:
                problem = check()
            except Exception as exc:  # noqa: BLE001 - a probe answer must not fail
                problem = f"check failed: {exc!r}"
            conditions[key] = {"ok": not problem, "detail": problem or "ok"}
        for key, check in watches.items():
            try:
                message = check()
            except Exception as exc:  # noqa: BLE001 - a probe answer must not fail
                message = f"check failed: {exc!r}"
            if message:
                warnings[key] = message
        return {"ready": all(c["ok"] for c in conditions.values()),
                "conditions": conditions, "warnings": warnings}
