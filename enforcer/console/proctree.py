"""The process tree of a detection, from the alert's output fields (Falco's names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProcessNode:
    """One process of the chain, oldest ancestor first; unknown parts are None."""

    pid: Any
    name: Any
    cmdline: Any = None
    exepath: Any = None


def _indexed(fields: dict[str, Any], base: str, index: int) -> Any:
    value = fields.get(f"{base}[{index}]")
    if value is None:
        listed = fields.get(base)
        # Ancestor arrays are parent-first: [1] is the parent, [2] the grandparent...
        if isinstance(listed, list) and 0 < index <= len(listed):
            value = listed[index - 1]
    return value


def process_chain(fields: dict[str, Any], depth: int = 8) -> list[ProcessNode]:
    """Ancestors (oldest first), then the parent, then the process that matched."""
    chain: list[ProcessNode] = []
    if any(fields.get(k) is not None for k in ("proc.pid", "proc.name", "proc.cmdline")):
        chain.append(ProcessNode(fields.get("proc.pid"), fields.get("proc.name"),
                                 fields.get("proc.cmdline"), fields.get("proc.exepath")))
    parent_name = fields.get("proc.pname") or _indexed(fields, "proc.aname", 1)
    parent_pid = fields.get("proc.ppid") or _indexed(fields, "proc.apid", 1)
    if parent_name is not None or parent_pid is not None:
        chain.append(ProcessNode(parent_pid, parent_name, fields.get("proc.pcmdline"),
                                 fields.get("proc.pexepath")))
        for index in range(2, depth + 1):
            name = _indexed(fields, "proc.aname", index)
            pid = _indexed(fields, "proc.apid", index)
            if name is None and pid is None:
                break
            chain.append(ProcessNode(pid, name))
    chain.reverse()
    return chain
