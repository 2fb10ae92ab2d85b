"""A live process of the matched process's container, for actions that act on the
container's namespaces (quarantine: its network namespace) after the matched process itself
is gone: the in-kernel kill killed it at the syscall, before the escalation ran.

Candidates are the matched process's ancestors (from the process table, so not chosen by
the workload), then every process on the node; a candidate counts only when the outermost
container id in its cgroup path is the event's full container id (a workload can make
cgroups below its own, never one above it or beside it). The handle is a pidfd, so the
caller can check after reading the namespace that the pid was not reused meanwhile.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

from actions.process import ProcessGone, ProcessHandle

_CONTAINER_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")


def outermost_container_id(cgroup_text: str) -> str | None:
    """The first 64-hex container id in the paths of a /proc/PID/cgroup text (the
    runtime's: libpod-ID, docker-ID, cri-containerd-ID, crio-ID...), or None."""
    found = None
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        match = _CONTAINER_ID.search(path)
        if match is None:
            continue
        if found is None:
            found = match.group(0)
        elif match.group(0) != found:
            return None  # hierarchies disagree: not a process to trust
    return found


def in_container(pid: int, full_id: str, proc_root: str = "/proc") -> bool:
    """Whether the process's cgroups put it in that container."""
    try:
        with open(f"{proc_root}/{pid}/cgroup", encoding="utf-8", errors="replace") as fh:
            return outermost_container_id(fh.read(65536)) == full_id
    except OSError:
        return False


def _candidates(ancestors: Iterable[Any], proc_root: str) -> Iterator[int]:
    seen: set[int] = set()
    for pid in ancestors:
        if isinstance(pid, int) and pid > 1 and pid not in seen:
            seen.add(pid)
            yield pid
    try:
        names = os.listdir(proc_root)
    except OSError:
        return
    for name in names:
        if name.isdigit() and int(name) not in seen:
            yield int(name)


def live_member(event: Any, proc_root: str = "/proc") -> ProcessHandle | None:
    """A handle on a live process of the event's container, or None (a host process, or
    the container has no live process left)."""
    full_id = event.get("container.full_id") if event is not None else None
    if not full_id or full_id == "host" or not _CONTAINER_ID.fullmatch(str(full_id)):
        return None
    ancestors = event.get("proc.apid") or []
    for pid in _candidates(ancestors if isinstance(ancestors, list) else [], proc_root):
        if not in_container(pid, full_id, proc_root):
            continue
        try:
            handle = ProcessHandle.open(pid, None)
        except ProcessGone:
            continue
        except Exception:  # noqa: BLE001 - a candidate that cannot be pinned is skipped
            continue
        if in_container(pid, full_id, proc_root):  # still that process (pinned now)
            return handle
        handle.close()
    return None
