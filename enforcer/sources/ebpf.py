"""The live event source: the probes of bpf/events.c, loaded with bcc, decoded into records.

`EbpfSource(config).open()` compiles and attaches; `poll()` returns decoded records
(dicts, see enforcer.sources.decode); `drops()` is the kernel's count of records the ring
buffer had no room for. Everything but loading is pure and tested without a kernel:
`probe.render()` for the C text, `decode.decode()` for the records.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from enforcer.errors import ProbeError
from enforcer.sources import syscalls as sc
from enforcer.sources.decode import MIN_RECORD_SIZE, decode
from enforcer.sources.kernel_btf import running_kernel_offsets
from enforcer.sources.probe import ProbeConfig, lpm_key, render, wakeup_every

__all__ = ["EbpfSource", "ProbeConfig", "available_syscalls", "decode", "render"]


def available_syscalls(exists: Callable[[str, str], bool] | None = None) -> frozenset[str]:
    """Syscalls of the table whose enter and exit tracepoints this kernel has."""
    if exists is None:
        from enforcer.adapters.bcc_probe import tracepoint_exists as exists  # noqa: PLC0415
    return frozenset(s.name for s in sc.SYSCALLS
                     if exists("syscalls", f"sys_enter_{s.name}")
                     and exists("syscalls", f"sys_exit_{s.name}"))


def registers_at_exit_supported(release: str | None = None,
                                btf: str = "/sys/kernel/btf/vmlinux") -> bool:
    """Whether an exit handler can read a syscall's arguments from the task's saved
    registers: bpf_task_pt_regs needs Linux 5.15 and the kernel's BTF."""
    release = release or os.uname().release
    try:
        major, minor = (int(x) for x in release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 15) and os.path.exists(btf)


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
    missing = tuple(n for n in wanted if n not in available
                    and (event_types is None or n in event_types or n in sc.LIFECYCLE))
    # Rules that may match any event type (None) get every syscall in full, but the
    # frequent descriptor housekeeping (every close of the host) only for the fd table:
    # these syscalls were not watched at all before the table, and a rule without an
    # evt.type is what Falco warns about. A rule that names them gets them in full.
    state_only = tuple(n for n in attach if n in sc.FD_STATE and (
        n in sc.HOUSEKEEPING if event_types is None else n not in event_types))
    return (replace(config, syscalls=attach, state_only=state_only),
            Attachment(attach, missing))


POLL_MS = 1  # while records flow: how often the reader drains (bounds their delay)
IDLE_S = 0.05  # without records for this long, the reader sleeps until one wakes it
SLEEP_MS = 20


class EbpfSource:
    """Loads the probes and hands out decoded records."""

    def __init__(self, config: ProbeConfig):
        self.config = config
        self._probe: Any = None
        # batches read from the ring: (their bytes, each record's (offset, length))
        self._pending: list[tuple[bytes, list[tuple[int, int]]]] = []
        self._npending = 0
        self.records = 0
        self.batch = 1024  # records handed over per poll at most
        # the kernel wakes the reader only every config.wakeup_every records: a poll
        # waits at most this long before it drains what is there anyway
        self.max_wait_ms = 10 if wakeup_every(config) > 1 else None
        # Adaptive reader (wakeup_every == 1): after a record it stays awake, draining
        # every POLL_MS without being woken, until IDLE_S pass without records; then it
        # sleeps and the next record wakes it. A build-like workload emits records in
        # runs, and waking the reader for each cost the emitting task 5-18 us per record;
        # an idle node keeps an agent that sleeps.
        self._polling = False
        self._backlog = False
        self._busy_at = 0.0
        self.wakeups = 0  # times a record woke the sleeping reader
        self._sleeping = False
        self.warnings: list[str] = []
        self.opened_ns = 0

    def open(self) -> None:
        """Compile, load and attach; raises ProbeError with an explanation on failure."""
        from enforcer.adapters.bcc_probe import EXIT_COMPILE, BccProbe  # noqa: PLC0415

        if self.config.args_at_exit and not registers_at_exit_supported():
            self.config = replace(self.config, args_at_exit=False)
        if self.config.sock_offsets is None:
            self.config = replace(self.config, sock_offsets=running_kernel_offsets())
        try:
            self._probe = BccProbe(render(self.config))
        except ProbeError as exc:
            if not self.config.args_at_exit or exc.exit_code != EXIT_COMPILE:
                raise
            # exit-only handlers this kernel refuses: the enter+exit pairs instead
            self.config = replace(self.config, args_at_exit=False)
            self._probe = BccProbe(render(self.config))
            self.warnings.append(
                "syscalls are watched at enter and exit (two tracepoint hits each): this "
                f"kernel refused reading their arguments at exit ({str(exc).splitlines()[0]})")
        self.warnings += self._probe.warnings
        # an exec or fork after this was seen by these probes (enforcer.kernel.detection_masks.use)
        self.opened_ns = time.monotonic_ns()
        if self.config.open_prefixes:
            self._probe.set_open_prefixes(
                {lpm_key(p): mask for p, mask in self.config.open_prefixes.items()})
        if self.config.open_prefixes is not None and self.config.open_suffixes:
            self._probe.set_open_suffixes(
                [(s.encode(), mask) for s, mask in self.config.open_suffixes.items()])

    def _keep(self, batch: tuple[bytes, list[tuple[int, int]]]) -> None:
        if batch[1]:
            self._pending.append(batch)
            self._npending += len(batch[1])

    def _wait(self, timeout_ms: int) -> None:
        self._keep(self._probe.poll(timeout_ms, self.batch - self._npending))

    def _consume(self) -> None:
        if self._npending < self.batch:
            self._keep(self._probe.consume(self.batch - self._npending))

    def poll(self, timeout_ms: int = 100) -> list[dict[str, Any]]:
        """Decoded records that arrived, waiting at most timeout_ms for the first (at most
        max_wait_ms when the kernel batches its wake-ups: then this may return nothing
        before timeout_ms, and callers loop)."""
        if self._probe is None:
            raise ProbeError("the eBPF source is not open")
        if self.max_wait_ms is None:
            self._adaptive_poll(timeout_ms)
        else:
            self._wait(min(timeout_ms, self.max_wait_ms))
            self._consume()  # records that did not wake us
        return self._take()

    def _adaptive_poll(self, timeout_ms: int) -> None:
        if self._polling:
            if not self._backlog:  # after a full batch more is waiting: no nap
                self._wait(min(timeout_ms, POLL_MS))  # records do not wake this
            self._consume()
            self._backlog = self._npending >= self.batch
            now = time.monotonic()
            if self._pending:
                self._busy_at = now
            elif now - self._busy_at > IDLE_S:
                self._probe.set_reader_polling(False)
                self._polling = self._backlog = False
                # a record emitted as the flag changed did not wake anyone: take it now
                self._consume()
            return
        # asleep: a record wakes this at once; SLEEP_MS bounds the rare record that was
        # emitted unwoken just as the reader went to sleep
        self._sleeping = True
        self._wait(min(timeout_ms, SLEEP_MS))
        if self._pending:
            self._sleeping = False
            self._probe.set_reader_polling(True)
            self._polling, self._busy_at = True, time.monotonic()
            self.wakeups += 1

    @property
    def reader_sleeping(self) -> bool:
        """Whether the reader has gone to sleep: from now on the next record, whenever it
        comes, wakes it (and counts in `wakeups`). Unlike `not reader_polling`, this is not
        true in the moment between the reader leaving its timer and its last drain."""
        return self._sleeping

    @property
    def reader_polling(self) -> bool:
        """Whether the reader is draining on its timer (records do not wake it) rather
        than asleep until the next record wakes it."""
        return self._polling

    def drain(self) -> list[dict[str, Any]]:
        """Whatever is left in the ring buffer, without waiting (see drain_batches)."""
        return [rec for batch in self.drain_batches() for rec in batch]

    def drain_batches(self) -> Iterator[list[dict[str, Any]]]:
        """Whatever is left in the ring buffer, a batch at a time, without waiting: every
        record there when this was called, however far behind the reader is (an agent
        told to stop, or old probes being replaced, must decide them all). It ends once
        the ring is empty, or after as many records as the ring can hold, so that a flood
        still being written cannot keep it from ending."""
        if self._probe is None:
            return
        budget = self.config.ringbuf_pages * 4096 // (MIN_RECORD_SIZE + 8) + self.batch
        while budget > 0:
            self._consume()
            if not self._npending:
                return
            budget -= self._npending
            yield self._take()

    def _take(self) -> list[dict[str, Any]]:
        batches, self._pending = self._pending, []
        self.records += self._npending
        self._npending = 0
        return [decode(buf, off) for buf, spans in batches for off, size in spans
                if size >= MIN_RECORD_SIZE]

    def pending(self) -> bool:
        """Whether records wait in the ring buffer (not read yet)."""
        return self._probe is not None and self._probe.pending()

    def quiet_maps(self) -> Any:
        """The probes' detection masks (enforcer.kernel.detection_masks.MaskMaps), or None when the
        probes have none."""
        if self._probe is None or not self.config.quiet_masks:
            return None
        return self._probe

    def quiet_dropped(self) -> int:
        """Records the detection masks dropped in the kernel since the probes were loaded."""
        maps = self.quiet_maps()
        return maps.quiet_dropped() if maps is not None else 0

    def fd_keys(self) -> Any:
        """The probes' set of tracked descriptors (enforcer.state.fd_table.FdKeys)."""
        if self._probe is None:
            raise ProbeError("the eBPF source is not open")
        return self._probe.fd_keys()

    def drops(self) -> int:
        """Records lost in the kernel because the ring buffer was full."""
        return self._probe.drops() if self._probe is not None else 0

    def drop_counts(self) -> tuple[dict[str, int], dict[int, int]]:
        """(drops by event type, drops by CPU) since the probes were loaded."""
        if self._probe is None:
            return {}, {}
        by_code, by_cpu = self._probe.drop_counts()
        by_event: dict[str, int] = {}
        for code, count in by_code.items():
            name = sc.event_name(code)
            by_event[name] = by_event.get(name, 0) + count
        return by_event, by_cpu

    def close(self) -> None:
        """Detach the programs (idempotent; taken out first, so a close from another
        thread meanwhile finds nothing to close twice)."""
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.close()


def default_config(agent_pid: int | None = None) -> ProbeConfig:
    """Config that drops the calling process's own events in the kernel."""
    return ProbeConfig(agent_tgid=agent_pid if agent_pid is not None else os.getpid())
