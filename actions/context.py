"""What an action's `plan` sees: the alert, the matched event and the agent's services."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from enforcer.errors import ActionError


class MissingFields(ActionError):
    """The event lacks fields the action needs: the action is skipped and audited."""

    def __init__(self, fields: list[str]):
        self.fields = list(fields)
        super().__init__("the event lacks " + ", ".join(self.fields))


@dataclass
class ActionContext:
    """Built by the responder for each (match, action).

    `guards` enforces what no policy can switch off (see enforcer.policy.guards);
    `services` gives adapters lazily (`kube`, `netlink`) so that a policy without Kubernetes
    actions never needs a cluster; `process` is the process handle opened when the match was
    decided (a pidfd pinned to pid + start time), or None."""

    alert: Any
    policy: str
    node_name: str | None
    guards: Any
    services: Any
    process: Any = None
    state_dir: Path = Path("/run/enforcer")
    snapshot_dir: Path = Path("/var/lib/enforcer/snapshots")
    results: dict[str, Any] = field(default_factory=dict)  # earlier actions' outcomes

    @property
    def event(self) -> Any:
        """The matched event (a mapping with `.get(field)`)."""
        return getattr(self.alert, "event", None) or {}

    def field(self, name: str) -> Any:
        """An event field, falling back to the alert's output fields."""
        value = self.event.get(name)
        if value is None:
            value = (getattr(self.alert, "output_fields", None) or {}).get(name)
        if value in ("", "<NA>"):
            return None
        return value
