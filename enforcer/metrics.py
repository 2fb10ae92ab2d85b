"""Prometheus metrics of one agent, in a registry of its own (never the global default).

Hot-path counts (events by type, kernel drops) are not Prometheus children incremented per
event: the agent keeps plain counters that cost a dict increment, and a collector reads them
when /metrics is scraped. Everything that happens at most once per alert or action is a
regular prometheus_client metric.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from enforcer import __version__
from enforcer.priority import Priority
from enforcer.sources import drop_kinds

PREFIX = "enforcer"
FALCO_PREFIX = "falcosecurity"
ENGINE_NAME = "bcc_ebpf"  # falcosecurity_scap_engine_name_info{engine_name}

#: () -> (drops by event type, drops by CPU number)
DropCounts = tuple[Mapping[str, int], Mapping[int, int]]

# `*_created` series double the exposition for no use on a DaemonSet's dashboards.
disable_created_metrics()

# Action latencies span an in-process signal (sub-millisecond) to a Kubernetes call with
# retries (seconds).
ACTION_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                          1.0, 2.5, 5.0, 10.0, 30.0)


class _HotPathCollector(Collector):
    """Exposes counts the agent keeps itself, read at scrape time."""

    def __init__(self, metrics: Metrics):
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        events = CounterMetricFamily(
            f"{PREFIX}_events", "Events received from the source, by event type",
            labels=["type"])
        for evt_type, count in sorted(self._metrics.event_counts.copy().items()):
            events.add_metric([str(evt_type)], count)
        yield events
        drops = CounterMetricFamily(
            f"{PREFIX}_kernel_drops",
            "Events the kernel could not hand to userspace (ring buffer full)")
        drops.add_metric([], self._metrics.kernel_drops())
        yield drops
        by_event = CounterMetricFamily(
            f"{PREFIX}_kernel_drops_by_event",
            "Events the kernel could not hand to userspace, by event type", labels=["event"])
        for event, count in sorted(self._metrics.kernel_drop_counts()[0].items()):
            by_event.add_metric([event], count)
        yield by_event
        kernel = self._metrics.in_kernel_kills()
        if kernel is not None:
            kills, stale, lost = kernel
            for name, value, text in (
                    ("in_kernel_kills", kills, "Processes the in-kernel kill killed (the "
                                               "kernel's own counter)"),
                    ("in_kernel_kill_stale", stale, "Times the in-kernel kill did not kill "
                                                    "because the process changed since exec"),
                    ("in_kernel_kill_records_lost", lost, "In-kernel kill records lost "
                                                          "before userspace read them")):
                family = CounterMetricFamily(f"{PREFIX}_{name}", text)
                family.add_metric([], value)
                yield family


class _FalcoCollector(Collector):
    """Falco's names and labels for what the agent counts, beside ours, so that Falco's
    Grafana dashboard and alerting rules work unchanged (docs/observability.md maps them).
    Read at scrape time from the same counts as ours: the two can never disagree."""

    def __init__(self, metrics: Metrics):
        self._metrics = metrics
        self._started = time.monotonic()

    def collect(self) -> Iterable[Metric]:
        m = self._metrics
        version = GaugeMetricFamily(f"{FALCO_PREFIX}_falco_version_info",
                                    "Version of the running agent (Falco's name)",
                                    labels=["version"])
        version.add_metric([f"enforcer-{__version__}"], 1)
        yield version
        engine = GaugeMetricFamily(f"{FALCO_PREFIX}_scap_engine_name_info",
                                   "Event source engine (Falco's name)",
                                   labels=["engine_name", "evt_source"])
        engine.add_metric([ENGINE_NAME, "syscall"], 1)
        yield engine
        with m._lock:
            matches = dict(m.falco_matches)
        tag_names = sorted({f"tag_{_label(t)}" for (_, _, _, tags) in matches for t in tags})
        rules = CounterMetricFamily(f"{FALCO_PREFIX}_falco_rules_matches",
                                    "Rule matches (Falco's name and labels)",
                                    labels=["rule_name", "priority", "source", *tag_names])
        for (rule, priority, source, tags), count in sorted(matches.items()):
            have = {f"tag_{_label(t)}" for t in tags}
            rules.add_metric([rule, str(priority), source,
                              *("true" if t in have else "" for t in tag_names)], count)
        yield rules
        events = sum(m.event_counts.copy().values())
        for subsystem in ("scap", "falco"):
            family = CounterMetricFamily(f"{FALCO_PREFIX}_{subsystem}_n_evts",
                                         "Events received from the kernel (Falco's name)")
            family.add_metric([], events)
            yield family
        drops = CounterMetricFamily(f"{FALCO_PREFIX}_scap_n_drops",
                                    "Events the kernel could not hand to userspace (Falco's "
                                    "name)")
        drops.add_metric([], m.kernel_drops())
        yield drops
        yield from self._drop_breakdowns()
        queue = CounterMetricFamily(f"{FALCO_PREFIX}_falco_outputs_queue_num_drops",
                                    "Alerts dropped because an output's queue was full "
                                    "(Falco's name)")
        queue.add_metric([], sum(sample.value for family in m.output_drops.collect()
                                 for sample in family.samples
                                 if sample.name.endswith("_total")))
        yield queue
        yield from self._resources()

    def _drop_breakdowns(self) -> Iterable[Metric]:
        """Falco's drops by kind (exit direction; enter at 0, as Falco 0.44) and by CPU."""
        by_event, by_cpu = self._metrics.kernel_drop_counts()
        kinds = drop_kinds.by_kind(by_event)
        family = CounterMetricFamily(f"{FALCO_PREFIX}_scap_n_drops_buffer",
                                     "Events the kernel could not hand to userspace, by "
                                     "Falco's kind of syscall (Falco's name)",
                                     labels=["dir", "drop"])
        for kind, count in kinds.items():
            family.add_metric(["exit", kind], count)
        for kind in drop_kinds.ENTER_KINDS:
            family.add_metric(["enter", kind], 0)
        yield family
        cpus = CounterMetricFamily(f"{FALCO_PREFIX}_scap_n_drops_cpu",
                                   "Events the kernel could not hand to userspace, by CPU "
                                   "(Falco's name)", labels=["cpu"])
        for cpu, count in sorted(by_cpu.items()):
            cpus.add_metric([str(cpu)], count)
        yield cpus

    def _resources(self) -> Iterable[Metric]:
        """Falco's resource_utilization metrics, from this process's own accounting."""
        times = os.times()
        wall = max(time.monotonic() - self._started, 1e-9)
        cpu = GaugeMetricFamily(f"{FALCO_PREFIX}_falco_cpu_usage_ratio",
                                "CPU used by the agent since start, per CPU (Falco's name)",
                                labels=["raw_name"])
        cpu.add_metric(["cpu_usage_perc"], (times.user + times.system) / wall)
        yield cpu
        try:
            with open("/proc/self/statm", encoding="ascii") as statm:
                size, resident = (int(v) for v in statm.read().split()[:2])
        except (OSError, ValueError):
            return
        page = os.sysconf("SC_PAGE_SIZE")
        for name, pages in (("memory_rss", resident), ("memory_vsz", size)):
            family = GaugeMetricFamily(f"{FALCO_PREFIX}_falco_{name}_bytes",
                                       f"{name} of the agent (Falco's name)",
                                       labels=["raw_name"])
            family.add_metric([name], pages * page)
            yield family


def _label(tag: str) -> str:
    """A tag as a Prometheus label name part (Falco's tags are already [a-zA-Z0-9_])."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in tag)


class Metrics:
    """Every metric the agent exports, with one recording method per thing that happens.

    Methods are safe to call from any thread. `registry` is what /metrics serves.
    """

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # Incremented by the source's loop: `metrics.event_counts[evt_type] += 1`.
        self.event_counts: Tally[str] = Tally()
        self._kernel_drops_reader: Callable[[], int] | None = None
        self._drop_counts_reader: Callable[[], DropCounts] | None = None
        self._in_kernel_reader: Callable[[], tuple[int, int, int]] | None = None
        self._lock = threading.Lock()
        r.register(_HotPathCollector(self))
        # (rule, priority number, source, tags) -> matches, for Falco's rules_matches
        self.falco_matches: Tally[tuple[str, int, str, tuple[str, ...]]] = Tally()

        self.build_info = Gauge(f"{PREFIX}_build_info", "Version of the running agent",
                                ["version"], registry=r)
        self.build_info.labels(__version__).set(1)
        self.rule_matches = Counter(f"{PREFIX}_rule_matches", "Rule matches (alerts)",
                                    ["rule", "priority"], registry=r)
        self.actions = Counter(f"{PREFIX}_actions", "Response actions by outcome",
                               ["action", "outcome", "dry_run"], registry=r)
        self.action_seconds = Histogram(
            f"{PREFIX}_action_duration_seconds", "Time to plan and apply one action",
            ["action"], buckets=ACTION_LATENCY_BUCKETS, registry=r)
        self.rate_limited = Counter(
            f"{PREFIX}_rate_limited", "Responses not taken because a rate limit or cooldown "
            "was exhausted", ["policy"], registry=r)
        self.guard_suppressed = Counter(
            f"{PREFIX}_guard_suppressed", "Actions refused by a safety guard",
            ["guard"], registry=r)
        self.output_drops = Counter(
            f"{PREFIX}_output_drops", "Alerts an output could not take (queue full)",
            ["output"], registry=r)
        self.output_errors = Counter(
            f"{PREFIX}_output_errors", "Alerts an output failed to deliver after retries",
            ["output"], registry=r)
        self.policy_reloads = Counter(f"{PREFIX}_policy_reloads", "Policy (re)loads by result",
                                      ["result"], registry=r)
        self.responder_drops = Counter(
            f"{PREFIX}_responder_drops", "Matches not handled because the responder queue "
            "was full", registry=r)
        self.policy_suspensions = Counter(
            f"{PREFIX}_policy_suspensions", "Times a policy's blast-radius breaker suspended "
            "it for new workloads", ["policy"], registry=r)
        self.policy_resumes = Counter(
            f"{PREFIX}_policy_resumes", "Times a suspended policy was resumed by command",
            ["policy"], registry=r)
        self.policy_suspended_matches = Counter(
            f"{PREFIX}_policy_suspended_matches", "Matches from new workloads not answered "
            "because their policy was suspended", ["policy"], registry=r)
        self.kubernetes_events = Counter(
            f"{PREFIX}_kubernetes_events", "Kubernetes Events for response outcomes, by "
            "result (created, failed, dropped)", ["result"], registry=r)
        self.intake_requests = Counter(
            f"{PREFIX}_falco_http_requests", "Requests to the falco-http input by status code",
            ["code"], registry=r)
        r.register(_FalcoCollector(self))  # last: it reads the metrics above

    # --- hot path, read at scrape time -----------------------------------------------------

    def read_kernel_drops_with(self, reader: Callable[[], int]) -> None:
        """Register the function that sums the per-CPU kernel drop counters."""
        self._kernel_drops_reader = reader

    def read_kernel_drop_counts_with(self, reader: Callable[[], DropCounts]) -> None:
        """Register the function that gives the kernel drops by event type and by CPU."""
        self._drop_counts_reader = reader

    def kernel_drop_counts(self) -> DropCounts:
        reader = self._drop_counts_reader
        if reader is None:
            return {}, {}
        try:
            by_event, by_cpu = reader()
            return dict(by_event), dict(by_cpu)
        except Exception:  # noqa: BLE001 - a scrape must not fail because a map read did
            return {}, {}

    def read_in_kernel_kills_with(self, reader: Callable[[], tuple[int, int, int]]) -> None:
        """Register the reader of the in-kernel kill's counters (kills, stale, lost)."""
        self._in_kernel_reader = reader

    def in_kernel_kills(self) -> tuple[int, int, int] | None:
        reader = self._in_kernel_reader
        if reader is None:
            return None
        try:
            kills, stale, lost = reader()
            return int(kills), int(stale), int(lost)
        except Exception:  # noqa: BLE001 - a scrape must not fail because a map read did
            return None

    def kernel_drops(self) -> int:
        reader = self._kernel_drops_reader
        if reader is None:
            return 0
        try:
            return int(reader())
        except Exception:  # noqa: BLE001 - a scrape must not fail because a map read did
            return 0

    def count_events(self, by_type: Mapping[str, int]) -> None:
        """Add a batch of per-type event counts (for sources that count locally)."""
        with self._lock:
            self.event_counts.update(by_type)

    # --- once per alert / action -----------------------------------------------------------

    def rule_matched(self, rule: str, priority: str, source: str = "syscall",
                     tags: Iterable[str] = ()) -> None:
        """One alert: ours by rule and priority word, Falco's by rule_name, priority number,
        source and one tag_* label per tag."""
        self.rule_matches.labels(rule, priority).inc()
        key = (rule, int(Priority.parse(priority)), source, tuple(sorted(set(tags))))
        with self._lock:
            self.falco_matches[key] += 1

    def action_done(self, action: str, outcome: str, dry_run: bool,
                    seconds: float | None = None) -> None:
        self.actions.labels(action, outcome, "true" if dry_run else "false").inc()
        if seconds is not None:
            self.action_seconds.labels(action).observe(seconds)

    def response_rate_limited(self, policy: str) -> None:
        self.rate_limited.labels(policy).inc()

    def guard_refused(self, guard: str) -> None:
        self.guard_suppressed.labels(guard).inc()

    def output_dropped(self, output: str) -> None:
        self.output_drops.labels(output).inc()

    def output_failed(self, output: str) -> None:
        self.output_errors.labels(output).inc()

    def policies_loaded(self, ok: bool) -> None:
        self.policy_reloads.labels("success" if ok else "failure").inc()

    def responder_dropped(self) -> None:
        self.responder_drops.inc()

    def policy_breaker(self, policy: str, outcome: str) -> None:
        """A breaker record: `tripped` (suspended) or `resumed`."""
        if outcome == "tripped":
            self.policy_suspensions.labels(policy).inc()
        elif outcome == "resumed":
            self.policy_resumes.labels(policy).inc()

    def policy_refused_suspended(self, policy: str) -> None:
        self.policy_suspended_matches.labels(policy).inc()

    def kubernetes_event(self, result: str) -> None:
        self.kubernetes_events.labels(result).inc()

    def intake_request(self, code: int | str) -> None:
        self.intake_requests.labels(str(code)).inc()
