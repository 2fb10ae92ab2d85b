"""Falco's metric names and labels beside ours: the queries of Falco's own Grafana dashboard
(Falco 0.44.1's chart/falco/dashboards/falco-dashboard.json, kept under tests/data) select
data from /metrics, except the few drop breakdowns the agent has no counter for."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from enforcer.health import Readiness
from enforcer.http_server import start_http_server
from enforcer.metrics import Metrics
from tests.conftest import REPO

DASHBOARD = REPO / "tests" / "data" / "falco-config" / "falco-dashboard.json"
# Falco's libs' internal tables: the agent has no thread table or scratch map to overflow.
NOT_EXPORTED = {"falcosecurity_scap_n_drops_full_threadtable_total",
                "falcosecurity_scap_n_drops_scratch_map_total"}
SELECTOR = re.compile(r"(falcosecurity_[a-z0-9_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


def dashboard_selectors() -> list[str]:
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text()))
    return sorted({m.group(0) for e in exprs for m in SELECTOR.finditer(e)})


def select(samples: list, selector: str) -> list:
    """The samples an instant-vector selector picks. Dashboard variables ($pod, $source,
    $priority) mean "any" (Grafana's All); `pod` is a target label Prometheus adds when it
    scrapes a DaemonSet's pod, so it is not matched against the exposition."""
    name, _, body = selector.partition("{")
    matchers = MATCHER.findall(body.rstrip("}"))
    out = []
    for sample in samples:
        if sample.name != name:
            continue
        ok = True
        for label, op, value in matchers:
            if label == "pod":
                continue
            value = re.sub(r"\$\w+", ".*", value)
            have = sample.labels.get(label, "")
            hit = re.fullmatch(value, have) is not None if "~" in op else have == value
            ok = ok and (hit if op in ("=", "=~") else not hit)
        if ok:
            out.append(sample)
    return out


@pytest.fixture
def scraped() -> Iterator[tuple[Metrics, callable]]:
    metrics = Metrics()
    server = start_http_server("127.0.0.1:0", metrics, Readiness())

    def scrape() -> list:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        return [s for f in text_string_to_metric_families(text) for s in f.samples]

    yield metrics, scrape
    server.stop()


def test_falcos_dashboard_queries_return_data(scraped) -> None:
    metrics, scrape = scraped
    metrics.count_events({"openat": 40, "execve": 2})
    metrics.read_kernel_drops_with(lambda: 3)
    metrics.read_kernel_drop_counts_with(lambda: ({"openat": 3}, {0: 3}))
    metrics.output_dropped("stdout")
    metrics.rule_matched("Read sensitive file untrusted", "Warning", "syscall",
                         ("filesystem", "mitre_credential_access", "T1555"))
    metrics.rule_matched("Terminal shell in container", "Notice", "syscall",
                         ("container", "shell"))
    samples = scrape()
    selectors = dashboard_selectors()
    assert len(selectors) >= 20  # the dashboard was read
    empty = {s for s in selectors if not select(samples, s)}
    assert {s.split("{")[0] for s in empty} == NOT_EXPORTED, empty


def test_rules_matches_has_falcos_labels_and_ours_stay(scraped) -> None:
    metrics, scrape = scraped
    for _ in range(2):
        metrics.rule_matched("Read sensitive file untrusted", "Warning", "syscall",
                             ("filesystem", "T1555"))
    metrics.rule_matched("Terminal shell in container", "Notice", "syscall", ("container",))
    samples = scrape()
    [read] = select(samples, 'falcosecurity_falco_rules_matches_total{rule_name='
                             '"Read sensitive file untrusted"}')
    assert read.value == 2
    assert {k: v for k, v in read.labels.items() if v} == {
        "rule_name": "Read sensitive file untrusted", "priority": "4", "source": "syscall",
        "tag_filesystem": "true", "tag_T1555": "true"}
    # an alerting rule of Falco's kind: matches of priority Notice (5) or more severe
    severe = select(samples, 'falcosecurity_falco_rules_matches_total{priority=~"[0-5]"}')
    assert sum(s.value for s in severe) == 3
    [shell] = select(samples, 'falcosecurity_falco_rules_matches_total{tag_container="true"}')
    assert shell.labels["rule_name"] == "Terminal shell in container"
    assert select(samples, 'enforcer_rule_matches_total{rule="Terminal shell in container",'
                           'priority="Notice"}')[0].value == 1


def test_event_and_drop_counts_are_ours_under_falcos_names(scraped) -> None:
    metrics, scrape = scraped
    metrics.count_events({"openat": 7, "connect": 5})
    metrics.read_kernel_drops_with(lambda: 9)
    samples = scrape()
    assert select(samples, "falcosecurity_scap_n_evts_total")[0].value == 12
    assert select(samples, "falcosecurity_falco_n_evts_total")[0].value == 12
    assert select(samples, "falcosecurity_scap_n_drops_total")[0].value == 9
    assert select(samples, "enforcer_kernel_drops_total")[0].value == 9
    [engine] = select(samples, "falcosecurity_scap_engine_name_info")
    assert engine.labels == {"engine_name": "bcc_ebpf", "evt_source": "syscall"}
    assert select(samples, "falcosecurity_falco_memory_rss_bytes")[0].value > 0


def test_drops_by_kind_and_cpu_under_falcos_names(scraped) -> None:
    """The kernel counts drops per event type and CPU; Falco's drop kinds are the same
    groups of syscalls as Falco's drivers use (libs' compute_event_types_stats)."""
    metrics, scrape = scraped
    by_event = {"openat": 4, "creat": 1, "execve": 1, "fork": 2, "procexit": 1,
                "connect": 1, "unlinkat": 2, "dup2": 1, "ptrace": 1, "setns": 1,
                "socket": 3}
    metrics.read_kernel_drops_with(lambda: sum(by_event.values()))
    metrics.read_kernel_drop_counts_with(lambda: (by_event, {0: 10, 3: 8}))
    samples = scrape()

    def drops(direction: str, kind: str) -> float:
        [sample] = select(samples, "falcosecurity_scap_n_drops_buffer_total{"
                                   f'dir="{direction}", drop="{kind}"}}')
        return sample.value

    assert {kind: drops("exit", kind) for kind in (
        "clone_fork", "execve", "connect", "open", "dir_file", "other_interest", "close",
        "proc")} == {"clone_fork": 2, "execve": 1, "connect": 1, "open": 5, "dir_file": 3,
                     "other_interest": 2, "close": 0, "proc": 1}
    # Falco 0.44 keeps the enter directions at 0 (deprecated), and so do we
    assert all(drops("enter", kind) == 0 for kind in (
        "clone_fork", "execve", "connect", "open", "dir_file", "other_interest"))
    assert {s.labels["cpu"]: s.value for s in select(
        samples, "falcosecurity_scap_n_drops_cpu_total")} == {"0": 10, "3": 8}
    # ours: every event type, those of no Falco kind (socket) included
    assert {s.labels["event"]: s.value for s in select(
        samples, "enforcer_kernel_drops_by_event_total")} == by_event
    assert select(samples, "falcosecurity_scap_n_drops_total")[0].value == 18
