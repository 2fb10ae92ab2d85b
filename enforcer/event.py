"""The event model every source produces and every rule reads.

An event is any object with `get(field_name) -> value | None`, keyed by Falco field names
exactly as rules write them: `evt.type`, `proc.name`, `fd.name`, `evt.arg.flags`,
`container.id`, `k8s.ns.name`… A plain dict (what `enforcer replay` reads from JSONL) is an
event. The live eBPF source produces a lazy mapping that resolves proc/container/k8s fields
from the process table on first use.

Conventions (shared with the replay JSONL format):
- ancestor fields are arrays, parent first: `proc.aname`, `proc.apid`, `proc.aexepath`,
  `proc.acmdline`; so `proc.aname[1]` is `proc.aname[0]` of the array, the parent; `[0]` is
  the process itself (`proc.name`). An explicit key such as `"proc.aname[2]"` wins.
- a field with an argument (`evt.arg[0]`, `proc.aname[2]`) may be given as its own key.
- booleans and numbers are Python bools and ints; absent means missing (never an error).
- `evt.rawtime` is nanoseconds since the epoch; `evt.dir` is `<` (exit events only, as in
  current Falco, which evaluates rules on exit events with the enter arguments merged).
"""

from __future__ import annotations

from typing import Any, Protocol


class Event(Protocol):
    """What rules read. `get` returns None for a field the event does not have."""

    def get(self, field: str, default: Any = None) -> Any: ...
