"""A rule match, as every later stage (outputs, policies, responder, audit) sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from enforcer.priority import Priority


@dataclass(frozen=True)
class Alert:
    """One rule matching one event.

    `output` is the rendered rule output *without* Falco's time/priority prefix;
    `falco_json()` gives the Falco alert shape, whose `output` carries that prefix.
    """

    rule: str
    priority: Priority
    output: str
    output_fields: dict[str, Any]
    time_ns: int
    source: str = "syscall"
    tags: tuple[str, ...] = ()
    hostname: str = ""
    event: Any = field(default=None, compare=False, repr=False)  # the matched Event
    trace_id: str | None = None  # set by the audit layer when a trace exists

    @property
    def time_iso(self) -> str:
        """RFC 3339 with nanoseconds, as Falco writes `time`."""
        secs, nanos = divmod(self.time_ns, 1_000_000_000)
        stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{stamp}.{nanos:09d}Z"

    @property
    def text_line(self) -> str:
        """Falco's console line: `HH:MM:SS.nnnnnnnnn: Priority output`."""
        secs, nanos = divmod(self.time_ns, 1_000_000_000)
        clock = datetime.fromtimestamp(secs, UTC).strftime("%H:%M:%S")
        return f"{clock}.{nanos:09d}: {self.priority.display} {self.output}"

    def falco_json(self) -> dict[str, Any]:
        """The alert as Falco's json_output writes it."""
        doc: dict[str, Any] = {
            "hostname": self.hostname,
            "output": self.text_line,
            "output_fields": self.output_fields,
            "priority": self.priority.display,
            "rule": self.rule,
            "source": self.source,
            "tags": sorted(self.tags),
            "time": self.time_iso,
        }
        if self.trace_id:
            doc["trace_id"] = self.trace_id
        return doc
