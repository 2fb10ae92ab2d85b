"""The live agent: eBPF source -> process/container state -> rules -> alerts.

One thread runs the loop: poll the ring buffer, apply each record to the state, evaluate
the rules on each event, write alerts and hand them to the optional `on_alert` hook (the
responder attaches there; it must not block). The kernel's drop counter is checked every
second; drops are reported the way Falco reports them and counted for the summary.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from enforcer.alert import Alert
from enforcer.kernel.detection_masks import DetectionMasks
from enforcer.kernel.results_filter import with_rule_filters
from enforcer.priority import Priority
from enforcer.sources import drop_kinds
from enforcer.sources.ebpf import Attachment, EbpfSource, available_syscalls, plan
from enforcer.sources.probe import ProbeConfig
from enforcer.state.cgroup_ids import CgroupIds, cgroup2_mount
from enforcer.state.container_watch import ACTIONS, ContainerWatcher
from enforcer.state.containers import ContainerRegistry
from enforcer.state.fd_table import FdTable
from enforcer.state.live_event import StateContext
from enforcer.state.process_table import ProcessTable
from enforcer.state.runtime_metadata import CriSource, RuntimeAbsent, RuntimeMetadata
from enforcer.state.tracker import Tracker

log = logging.getLogger(__name__)


class AlertSink(Protocol):
    """Where alerts are written (stdout, a file...)."""

    def emit(self, alert: Alert) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class RuleEngine(Protocol):
    """What the agent needs from enforcer.rules.engine.Engine."""

    def evaluate(self, event: Any) -> list[Alert]: ...
    def event_types(self) -> frozenset[str] | None: ...


INSPECT_TIMEOUT = 5.0  # a lookup runs in the background: it may take its time


def _runtime_socket(explicit: str | None) -> str:
    from enforcer.adapters.docker_api import find_socket  # noqa: PLC0415

    # found at each use: the runtime may start (or move its socket) after the agent
    sock = find_socket(explicit)
    if sock is None:
        raise RuntimeAbsent("no Docker-compatible API socket found")
    return sock


def build_state(proc_root: str = "/proc", container_socket: str | None = None,
                lookup_timeout: float = 2.0, cri_socket: str | None = None) -> Tracker:
    """The process table (seeded from /proc), container registry and cgroup map.

    Container metadata comes from the Docker-compatible API (`container_socket`, else
    podman's or docker's) and from the CRI (`cri_socket`, else containerd's or cri-o's),
    looked up in the background (enforcer.state.runtime_metadata). `lookup_timeout` is how
    long an event that needs a new container's metadata may be set aside waiting for it.
    """
    from enforcer.adapters.docker_api import inspect_container  # noqa: PLC0415

    table = ProcessTable(proc_root)
    table.seed()

    def inspect(full_id: str) -> dict[str, Any] | None:
        return inspect_container(_runtime_socket(container_socket), full_id, INSPECT_TIMEOUT)

    lookup = RuntimeMetadata(docker=inspect, cri=_cri_source(cri_socket, INSPECT_TIMEOUT),
                             proc_root=proc_root)
    ctx = StateContext(table=table,
                       containers=ContainerRegistry(None, hold=lookup_timeout, lookup=lookup),
                       mono_to_wall_ns=StateContext.wall_offset(), proc_root=proc_root,
                       cgroup_ids=CgroupIds(cgroup2_mount()), fds=FdTable(proc_root))
    return Tracker(ctx)


def _cri_source(cri_socket: str | None, timeout: float) -> Callable[[], CriSource]:
    """The CRI client to ask now. gRPC takes a good part of a second to import: it is
    imported here, at start-up, when a CRI socket is there, and otherwise only once one
    appears, never on a host without a CRI runtime."""
    from enforcer.adapters.cri_sockets import find_socket  # noqa: PLC0415

    connector: Any = None
    lock = threading.Lock()  # lookups run on several background threads at once

    def source() -> CriSource:
        nonlocal connector
        with lock:
            if connector is None:
                if find_socket(cri_socket) is None:
                    raise RuntimeAbsent("no CRI socket found")
                from enforcer.adapters.cri import CriConnector  # noqa: PLC0415

                connector = CriConnector(cri_socket, timeout)
        client = connector.client()
        if client is None:
            raise RuntimeAbsent("no CRI socket found")
        return client

    if find_socket(cri_socket) is not None:
        from enforcer.adapters.cri import CriConnector  # noqa: PLC0415

        connector = CriConnector(cri_socket, timeout)
    return source


def container_watcher(registry: ContainerRegistry,
                      container_socket: str | None = None) -> ContainerWatcher:
    """A watcher (not started) that feeds `registry` from the Docker-compatible API's
    container events (the CRI's containers are looked up on first sight)."""
    from enforcer.adapters.docker_api import EventStream  # noqa: PLC0415

    def subscribe(since: int | None) -> EventStream:
        return EventStream(_runtime_socket(container_socket), ACTIONS, since=since)

    return ContainerWatcher(registry, subscribe)


@dataclass
class DropMonitor:
    """Falco's `syscall_event_drops`: notice new kernel drops and take the configured
    actions (`log` a line on stderr, `alert` through the outputs, `ignore`), at most
    `max_burst` at once and `rate` per second after that (a token bucket, as Falco's).

    `threshold` is Falco's: the actions are taken only when the drops since the last
    check are more than that share of the events of the interval (delivered + dropped).
    Our own default is 0 (every drop is said: an enforcing agent that misses events must
    say so); a falco.yaml gives Falco's 0.1."""

    stream: TextIO = field(default_factory=lambda: sys.stderr)
    last: int = 0
    occurrences: int = 0
    actions: int = 0
    total: int = 0
    on_drop: tuple[str, ...] = ("log",)
    rate: float = 0.03333
    max_burst: int = 1
    threshold: float = 0.0
    intervals_with_drops: int = 0  # checks that saw new drops, over the threshold or not
    alert: Callable[[Alert], None] | None = None  # where `alert` actions go
    _last_events: int = 0
    _last_kinds: dict[str, int] = field(default_factory=dict)
    _tokens: float = -1.0
    _refilled_ns: int = 0

    def check(self, drops: int, now_ns: int, events: int | None = None,
              by_event: Mapping[str, int] | None = None) -> str | None:
        """The warning line to log when drops grew since the last check (None when they
        did not, when they stayed within the threshold, when no token is left, or when
        the actions do not include `log`). `events`: records delivered so far (None:
        unknown, every drop is over the threshold); `by_event`: drops so far by event
        type (for Falco's breakdown in the alert)."""
        delivered = 0
        if events is not None:
            delivered, self._last_events = events - self._last_events, events
        kinds: dict[str, int] = {}
        if by_event is not None:
            now = drop_kinds.by_kind(by_event)
            kinds = {k: now[k] - self._last_kinds.get(k, 0) for k in now}
            self._last_kinds = now
        if drops <= self.last:
            return None
        new = drops - self.last
        self.last = drops
        self.total = drops
        self.intervals_with_drops += 1
        if events is not None and new / (delivered + new) <= self.threshold:
            return None
        self.occurrences += 1
        if not self._take_token(now_ns) or set(self.on_drop) <= {"ignore"}:
            return None
        self.actions += 1
        message = (f"Falco internal: syscall event drop. {new} system calls dropped in last "
                   "second.")
        if "alert" in self.on_drop and self.alert is not None:
            self.alert(Alert(rule="Falco internal: syscall event drop",
                             priority=Priority.CRITICAL, output=message,
                             output_fields=self._fields(new, drops, delivered, kinds),
                             time_ns=now_ns, source="internal"))
        if "log" not in self.on_drop:
            return None
        return f"{time.strftime('%H:%M:%S', time.gmtime(now_ns / 1e9))}: Critical {message}"

    @staticmethod
    def _fields(new: int, total: int, delivered: int, kinds: dict[str, int]) -> dict[str, int]:
        """Falco's output fields of its drop alert (numbers here, strings in Falco's), and
        the total since start (ours)."""
        fields = {"n_evts": delivered + new, "n_drops": new, "n_drops_buffer_total": new}
        fields.update({f"n_drops_buffer_{kind}_exit": n for kind, n in kinds.items()})
        fields["n_drops_total"] = total
        return fields

    def _take_token(self, now_ns: int) -> bool:
        if self._tokens < 0:
            self._tokens, self._refilled_ns = float(self.max_burst), now_ns
        elapsed = max(0, now_ns - self._refilled_ns) / 1e9
        self._tokens = min(float(self.max_burst), self._tokens + elapsed * self.rate)
        self._refilled_ns = now_ns
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def format(self) -> str:
        return ("Syscall event drop monitoring:\n"
                f"   - event drop detected: {self.occurrences} occurrences\n"
                f"   - num times actions taken: {self.actions}\n")


class Agent:
    """Runs the rules over live kernel events until stopped."""

    def __init__(self, engine: RuleEngine, outputs: Iterable[AlertSink] = (),
                 on_alert: Callable[[Alert], None] | None = None,
                 probe_config: ProbeConfig | None = None, rules: Iterable[Any] = (),
                 kernel_filter: bool = True, container_socket: str | None = None,
                 stderr: TextIO | None = None, proc_root: str = "/proc",
                 kernel_kill: Any = None, container_lookup_timeout: float = 2.0,
                 cri_socket: str | None = None):
        from enforcer.outputs.summary import AlertStats  # noqa: PLC0415

        self.engine = engine
        self.outputs = list(outputs)
        self.on_alert = on_alert
        self.stderr = stderr or sys.stderr
        base = probe_config or ProbeConfig(agent_tgid=os.getpid())
        self._unfiltered_config = base
        self.kernel_filter = kernel_filter
        if kernel_filter:
            base = with_rule_filters(base, rules)
        self._base_config = base
        self.probe_config = base
        self.attachment = Attachment((), ())
        self.container_socket = container_socket
        self.cri_socket = cri_socket
        self.proc_root = proc_root
        self.container_lookup_timeout = container_lookup_timeout
        # the in-kernel kill (enforcer.kernel.arming.KernelKiller), or None
        self.kernel_kill = kernel_kill
        # per-process detection masks (enforcer.kernel.detection_masks), with the kernel filter
        self.masks: DetectionMasks | None = None
        self.source: EbpfSource | None = None
        self.tracker: Tracker | None = None
        self.watcher: ContainerWatcher | None = None
        # events that read a new container's metadata before it was in: (deadline, full
        # container id, event), evaluated again once it is (or at the deadline)
        self._aside: list[tuple[float, str, Any]] = []
        self.stats = AlertStats()
        self.drops = DropMonitor(stream=self.stderr)
        self.events = 0
        self.records = 0  # records read from the kernel (events of drop thresholds)
        self.started = threading.Event()
        self._closed = False
        # Hot reload: a source opened for new rules, handed to the loop to switch to.
        self._next: tuple[EbpfSource, ProbeConfig, Attachment] | None = None
        self._switched = threading.Event()
        self._switch_lock = threading.Lock()
        self._drops_base = 0  # drops of sources already closed
        # ... by event type and by CPU; and the totals the last check saw (for /metrics)
        self._drop_counts_base: tuple[Counter[str], Counter[int]] = (Counter(), Counter())
        self.drop_counts: tuple[dict[str, int], dict[int, int]] = ({}, {})
        self._masks_described = 0  # container descriptions the masks have seen
        self._masks_rules: Any = None  # the rule list the masks were computed for
        self._skip_until = 0  # records of the new source up to this time were seen by the old
        self._skip_deadline = 0.0

    @property
    def attached(self) -> Attachment:
        return self.attachment

    def open(self) -> None:
        """Seed the state, load and attach the probes (ProbeError on failure)."""
        from enforcer.adapters.bcc_probe import require_privileges  # noqa: PLC0415

        require_privileges()
        self.probe_config, self.attachment = plan(self.engine.event_types(),
                                                  available_syscalls(), self._base_config)
        self.source = EbpfSource(self.probe_config)
        self.tracker = build_state(proc_root=self.proc_root,
                                   container_socket=self.container_socket,
                                   lookup_timeout=self.container_lookup_timeout,
                                   cri_socket=self.cri_socket)
        self.watcher = container_watcher(self.tracker.ctx.containers, self.container_socket)
        self.watcher.start()
        self.source.open()
        self.tracker.fds.keys = self.source.fd_keys()
        # the masks reduce the rules the engine judges with (an engine that does not say
        # which gets none); a reload is seen when the list changes (_poll_masks)
        rules = getattr(self.engine, "rules", None)
        maps = self.source.quiet_maps() if self.kernel_filter and rules is not None else None
        if maps is not None:
            self.masks = DetectionMasks(rules, maps, agent_tgid=self.probe_config.agent_tgid)
            self._masks_rules = rules
            self.masks.watch(self.tracker.table)
            self.masks.seed(self.tracker.ctx)
        if self.kernel_kill is not None:
            self.kernel_kill.open(self.tracker.ctx)
        for w in self.source.warnings:
            self.stderr.write(f"enforcer: warning: {w}\n")
        if self.attachment.missing:
            self.stderr.write("enforcer: warning: this kernel has no tracepoints for "
                              f"{', '.join(self.attachment.missing)}; rules on those "
                              "syscalls cannot fire\n")

    def run(self, stop: threading.Event) -> None:
        """The event loop; returns when `stop` is set (after draining what is pending)."""
        assert self.tracker is not None and self.source is not None, "open() first"
        self.started.set()
        next_drop_check = time.monotonic() + 1.0
        while not stop.is_set():
            records = self.source.poll(100)
            if self._skip_until:
                records = self._unseen(records)
            self._handle(records)
            if self._aside:
                self._take_back()
            if self.kernel_kill is not None:
                self.kernel_kill.poll()
            if self.masks is not None:
                self._poll_masks()
            if self._next is not None:
                self._switch()
            now = time.monotonic()
            if now >= next_drop_check:
                next_drop_check = now + 1.0
                self._check_drops()
        for batch in self.source.drain_batches():
            self._handle(batch)
        self._take_back(final=True)
        self._check_drops()

    def _poll_masks(self) -> None:
        masks = self.masks
        ctx = self.tracker.ctx  # type: ignore[union-attr]
        assert masks is not None
        rules = getattr(self.engine, "rules", None)
        if rules is not self._masks_rules:  # reloaded: all pass until computed again
            self._masks_rules = rules
            masks.reset(rules or ())
        try:
            masks.seed_if_needed(ctx)
            described = getattr(ctx.containers, "described", 0)
            if masks.waiting_container and described != self._masks_described:
                self._masks_described = described
                masks.rearm_waiting(ctx)
        except Exception:  # noqa: BLE001 - a mask left out passes everything
            log.exception("detection masks: update failed")

    def quiet_dropped(self) -> int:
        """Records the detection masks dropped in the kernel (current probes)."""
        return self.source.quiet_dropped() if self.source is not None else 0

    # -- re-attaching for new rules (hot reload) -----------------------------------------------

    def reattach(self, rules: Iterable[Any], event_types: frozenset[str] | None,
                 timeout: float = 30.0) -> Attachment | None:
        """Attach the probes that `rules` need, without stopping: the new programs are
        compiled and attached here (the caller's thread), then the event loop switches to
        them between two polls. Events seen by both sources while both are attached are
        handled once (cut at a monotonic timestamp). Returns the new attachment, or None
        when nothing had to change. Raises ProbeError (the old probes stay) or TimeoutError.
        """
        base = self._unfiltered_config
        if self.kernel_filter:
            base = with_rule_filters(base, rules)
        config, attachment = plan(event_types, available_syscalls(), base)
        with self._switch_lock:
            if config == self.probe_config:
                return None
            source = EbpfSource(config)
            source.open()
            self._switched.clear()
            self._next = (source, config, attachment)
        if not self._switched.wait(timeout):
            raise TimeoutError("the event loop did not switch to the new probes")
        return attachment

    def _switch(self) -> None:
        assert self._next is not None and self.source is not None
        new, config, attachment = self._next
        cut = time.monotonic_ns()  # bpf_ktime_get_ns: CLOCK_MONOTONIC
        old = self.source
        # What the old probes still hold up to the cut; after it, the new ones have it too.
        for batch in old.drain_batches():
            self._handle([r for r in batch if r.get("_ts_mono", 0) <= cut])
        self._drops_base += old.drops()
        by_event, by_cpu = old.drop_counts()
        self._drop_counts_base[0].update(by_event)
        self._drop_counts_base[1].update(by_cpu)
        # Detaching waits for an RCU grace period per tracepoint: not on the event loop.
        threading.Thread(target=old.close, name="enforcer-detach", daemon=True).start()
        self.source, self.probe_config, self.attachment = new, config, attachment
        # the new probes' set of tracked descriptors starts empty: what the table holds
        fds = self.tracker.fds  # type: ignore[union-attr]
        fds.keys = new.fd_keys()
        fds.keys.add(fds.all_keys())
        if self.masks is not None:
            self.masks.use(new.quiet_maps(), self.tracker.ctx,  # type: ignore[union-attr]
                           born_from=new.opened_ns)
        self._skip_until = cut
        self._skip_deadline = time.monotonic() + 2.0
        self._next = None
        self._switched.set()

    def _unseen(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if time.monotonic() > self._skip_deadline:
            self._skip_until = 0
        cut = self._skip_until
        return [r for r in records if r.get("_ts_mono", cut + 1) > cut]

    def drops_total(self) -> int:
        """Kernel drops since start, across re-attachments."""
        current = self.source.drops() if self.source is not None else 0
        return self._drops_base + current

    def _handle(self, records: list[dict[str, Any]]) -> None:
        apply = self.tracker.apply  # type: ignore[union-attr]
        evaluate = self.engine.evaluate
        kk = self.kernel_kill
        masks = self.masks
        ctx = self.tracker.ctx  # type: ignore[union-attr]
        self.records += len(records)
        for rec in records:
            event = apply(rec)
            if kk is not None:
                kk.after(rec, ctx)
            if masks is not None:
                try:
                    masks.after(rec, ctx)
                except Exception:  # noqa: BLE001 - a mask left out passes everything
                    log.exception("detection masks: update failed")
            if event is None:
                continue
            self.events += 1
            alerts = evaluate(event)
            if alerts and event.waiting_on is None:
                # outputs and responders read the container's pod after this: know it
                event.container()
            if event.waiting_on is not None:
                # A rule read the metadata of a container the runtime has not described
                # yet (a --rm container can be gone in milliseconds): judge this event
                # again when it is in, rather than wait for it here.
                self._aside.append((time.monotonic() + self.container_lookup_timeout,
                                    event.waiting_on, event))
                event.set_aside()
                continue
            for alert in alerts:
                self._alert(alert)

    def _take_back(self, final: bool = False) -> None:
        """Evaluate the events set aside whose container metadata is in (or whose wait is
        over), in the order they came."""
        registry = self.tracker.ctx.containers  # type: ignore[union-attr]
        now = time.monotonic()
        kept: list[tuple[float, str, Any]] = []
        for deadline, full_id, event in self._aside:
            if not final and now < deadline and registry.pending(full_id):
                kept.append((deadline, full_id, event))
                continue
            event.forget_container()
            for alert in self.engine.evaluate(event):
                self._alert(alert)
        self._aside = kept

    def _alert(self, alert: Alert) -> None:
        self.stats.record(alert)
        for out in self.outputs:
            try:
                out.emit(alert)
            except OSError as exc:  # a full disk must not stop detection
                log.warning("alert output failed: %s", exc)
        if self.on_alert is not None:
            try:
                self.on_alert(alert)
            except Exception:  # noqa: BLE001 - the hook must never kill the loop
                log.exception("on_alert hook failed for rule %s", alert.rule)

    def _check_drops(self) -> None:
        if self.source is None:
            return
        total = self.drops_total()
        if total != self.drops.last:  # read the breakdown only when something changed
            by_event, by_cpu = self.source.drop_counts()
            self.drop_counts = (dict(self._drop_counts_base[0] + Counter(by_event)),
                                dict(self._drop_counts_base[1] + Counter(by_cpu)))
        line = self.drops.check(total, time.time_ns(), self.records, self.drop_counts[0])
        if line:
            self.stderr.write(line + "\n")
            self.stderr.flush()

    def finish_outputs(self) -> None:
        """Flush and close the alert outputs (idempotent)."""
        outputs, self.outputs = self.outputs, []
        for out in outputs:
            try:
                out.flush()
                out.close()
            except OSError:
                pass

    def detach(self) -> None:
        """Detach the probes (idempotent). Slow on a busy host: the kernel waits for an
        RCU grace period per tracepoint, so callers report to the user first."""
        if self._closed:
            return
        self._closed = True
        if self.kernel_kill is not None:
            self.kernel_kill.close()
        if self.watcher is not None:
            self.watcher.stop()
        if self.source is not None:
            self.source.close()
        if self._next is not None:  # opened for a switch that never happened
            self._next[0].close()
            self._next = None

    def close(self) -> None:
        """Flush the outputs, then detach the probes (idempotent)."""
        self.finish_outputs()
        self.detach()

    def summary(self) -> str:
        """Falco's end-of-run summary, drop monitoring included."""
        return self.drops.format() + self.stats.format()

