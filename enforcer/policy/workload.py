"""Workload identity: who a response acts on, as the blast-radius breaker and escalation
count it.

An identity must be one the policed workload cannot multiply cheaply: a pod (its uid), else
a container (its id); on the host, the user (uid). Pids, executable copies, file names and
process names are free for an attacker to vary and are never part of it.

A workload may be known by more than one key: a container's processes carry its container
id from the first exec, and the pod uid once the metadata arrives (or at once, from a
kubelet cgroup path). Every key is kept, and a workload is the same if any key is shared,
so a late pod uid never makes a second workload of one container, and a container restarted
by the kubelet (new container id, same pod uid) stays the same workload."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

HOST_CONTAINER_IDS = frozenset({"", "host"})

Workload = tuple[str, ...]


def workload_of(get: Callable[[str], Any]) -> Workload:
    """The keys of the workload whose process raised the event, from its fields (`get`
    returns None for a field it lacks). Never empty: an event without any identity is
    the one workload "unknown"."""
    container = _text(get("container.id"))
    if container not in HOST_CONTAINER_IDS:
        pod = _text(get("k8s.pod.uid"))
        return (f"pod:{pod}", f"container:{container}") if pod else (f"container:{container}",)
    uid = _text(get("user.uid"))
    return (f"user:{uid}",) if uid else ("unknown",)


def alert_workload(alert: Any) -> Workload:
    """The workload of an alert (its output fields, then its event)."""
    fields = getattr(alert, "output_fields", None) or {}
    event = getattr(alert, "event", None)

    def get(name: str) -> Any:
        value = fields.get(name)
        if value is None and event is not None:
            value = event.get(name)
        return value
    return workload_of(get)


def describe(workload: Workload) -> str:
    """The workload for people: its most stable key."""
    return workload[0]


def _text(value: Any) -> str:
    if value is None:
        return ""
    text = str(value)
    return "" if text in ("<NA>", "N/A", "None") else text
