"""The live event source: the probes of bpf/events.c, loaded with bcc, decoded into records.

`EbpfSource(config).open()` compiles and attaches; `poll()` returns decoded records
(dicts, see enforcer.sources.decode); `drops()` is the kernel's count of records the ring
buffer had no room for. Everything but loading is pure and tested without a kernel:
`probe.render()` for the C text, `decode.decode()` for the records.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from enforcer.errors import ProbeError
from enforcer.sources import syscalls as sc
from enforcer.sources.decode import RECORD_SIZE, decode
from enforcer.sources.probe import ProbeConfig, lpm_key, render

__all__ = ["EbpfSource", "ProbeConfig", "available_syscalls", "decode", "render"]


def available_syscalls(exists: Callable[[str, str], bool] | None = None) -> frozenset[str]:
    """Syscalls of the table whose enter and exit tracepoints this kernel has."""
    if exists is None:
        from enforcer.adapters.bcc_probe import tracepoint_exists as exists  # noqa: PLC0415
    return frozenset(s.name for s in sc.SYSCALLS
                     if exists("syscalls", f"sys_enter_{s.name}")
                     and exists("syscalls", f"sys_exit_{s.name}"))


@dataclass
class Attachment:
    """What was attached and what could not be."""

    syscalls: tuple[str, ...]
    missing: tuple[str, ...]  # wanted by the rules, absent from this kernel


def plan(event_types: frozenset[str] | None, available: frozenset[str],
         config: ProbeConfig) -> tuple[ProbeConfig, Attachment]:
    """The probe config for rules matching these event types on this kernel."""
    wanted = [s.name for s in sc.select(event_types)]
    attach = tuple(n for n in wanted if n in available)
    missing = tuple(n for n in wanted if n not in available)
    return replace(config, syscalls=attach), Attachment(attach, missing)


class EbpfSource:
    """Loads the probes and hands out decoded records."""

    def __init__(self, config: ProbeConfig):
        self.config = config
        self._probe: Any = None
        self._pending: list[bytes] = []
        self.records = 0
        self.batch = 1024  # records handed over per poll at most
        self.warnings: list[str] = []

    def open(self) -> None:
        """Compile, load and attach; raises ProbeError with an explanation on failure."""
        from enforcer.adapters.bcc_probe import BccProbe  # noqa: PLC0415

        text = render(self.config)
        self._probe = BccProbe(text, self._take_one)
        self.warnings += self._probe.warnings
        if self.config.open_prefixes:
            self._probe.set_open_prefixes(
                {lpm_key(p): mask for p, mask in self.config.open_prefixes.items()})
        if self.config.open_prefixes is not None and self.config.open_suffixes:
            self._probe.set_open_suffixes(
                [(s.encode(), mask) for s, mask in self.config.open_suffixes.items()])

    def _take_one(self, raw: bytes) -> bool:
        self._pending.append(raw)
        return len(self._pending) < self.batch

    def poll(self, timeout_ms: int = 100) -> list[dict[str, Any]]:
        """Decoded records that arrived, waiting at most timeout_ms for the first."""
        if self._probe is None:
            raise ProbeError("the eBPF source is not open")
        self._probe.poll(timeout_ms)
        return self._take()

    def drain(self) -> list[dict[str, Any]]:
        """Whatever is left in the ring buffer, without waiting."""
        if self._probe is None:
            return []
        self._probe.consume()
        return self._take()

    def _take(self) -> list[dict[str, Any]]:
        raw, self._pending[:] = list(self._pending), []
        self.records += len(raw)
        return [decode(r) for r in raw if len(r) >= RECORD_SIZE]

    def drops(self) -> int:
        """Records lost in the kernel because the ring buffer was full."""
        return self._probe.drops() if self._probe is not None else 0

    def close(self) -> None:
        """Detach the programs (idempotent)."""
        if self._probe is not None:
            self._probe.close()
            self._probe = None


def default_config(agent_pid: int | None = None) -> ProbeConfig:
    """Config that drops the calling process's own events in the kernel."""
    return ProbeConfig(agent_tgid=agent_pid if agent_pid is not None else os.getpid())
