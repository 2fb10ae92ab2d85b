"""Whether the probes attached at start still see every event a reloaded rule set can
match.

The agent attaches only the syscalls its rules can match and loads an open-path filter
derived from them (enforcer.sources.ebpf.plan, enforcer.kernel.open_filter); both are fixed when
the probes load. A hot reload (enforcer.reload) that brings a rule on another syscall, or on
paths the kernel filter drops, must not be silently blind: this says what is missing, so the
agent can raise it loudly (and ask for a restart)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from enforcer.kernel.open_filter import open_filter_for, sends_need_address
from enforcer.sources import syscalls as sc
from enforcer.sources.probe import ProbeConfig


def coverage_gaps(engine: Any, config: ProbeConfig,
                  unavailable: Iterable[str] = ()) -> list[str]:
    """Human-readable gaps between what `engine`'s rules need and what `config` loaded
    (empty: the running probes see everything). `unavailable` are syscalls this kernel
    lacks, which no restart can attach. Conservative: a filter entry that differs at all
    counts as a gap."""
    gaps = []
    wanted = {s.name for s in sc.select(engine.event_types())}
    missing = sorted(wanted - set(config.syscalls) - set(unavailable))
    if missing:
        gaps.append("syscalls not attached: " + ", ".join(missing))
    types = engine.event_types()
    reduced = sorted(n for n in config.state_only
                     if (n not in sc.HOUSEKEEPING if types is None else n in types))
    if reduced:
        gaps.append("syscalls the kernel reduces to the fd table's records: "
                    + ", ".join(reduced))
    if config.open_prefixes is not None:
        new = open_filter_for(engine.rules)
        if new is None:
            gaps.append("the new rules need every open, the kernel filter drops some")
        else:
            extra = _not_loaded(new.prefixes, config.open_prefixes)
            extra += _not_loaded(new.suffixes, config.open_suffixes)
            if extra:
                gaps.append("open paths the kernel filter drops: " + ", ".join(
                    repr(p.rstrip("\0")) for p in extra[:5]) + (" ..." if len(extra) > 5
                                                                 else ""))
    if config.sends_need_address and not sends_need_address(engine.rules):
        gaps.append("the new rules look at sends without an address, the kernel drops them")
    return gaps


def _not_loaded(wanted: dict[str, int], loaded: dict[str, int]) -> list[str]:
    """Entries whose open classes are not all loaded for the same key."""
    return sorted(k for k, mask in wanted.items() if mask & ~loaded.get(k, 0))
