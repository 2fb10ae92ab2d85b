"""Filtered, paginated reads of the store: exactly the right rows."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enforcer.store import query
from enforcer.store.query import Filters

T0 = 1_795_428_000 * 10**9


def pods(page):
    return [r["pod"] for r in page.rows]


@pytest.mark.parametrize("filters, expected", [
    (Filters(), ["web-8", "curl-7", "xss-6", "evil-5", "coredns-4", "api-3", "api-2", "web-1"]),
    (Filters(rule="Read sensitive file untrusted"), ["api-3", "api-2"]),
    (Filters(priority=2), ["evil-5"]),
    (Filters(namespace="dev"), ["curl-7", "api-3"]),
    (Filters(pod="web-1"), ["web-1"]),
    (Filters(node="node-b"), ["curl-7", "coredns-4", "api-3"]),
    (Filters(policy="kill-readers"), ["api-3", "api-2"]),
    (Filters(action="kill"), ["web-8", "coredns-4", "api-2", "web-1"]),
    (Filters(outcome="done"), ["web-8", "web-1"]),  # evil-5 decided to act, but failed
    (Filters(outcome="dry-run"), ["evil-5", "api-2"]),
    (Filters(outcome="rate-limited"), ["api-3"]),
    (Filters(outcome="guard"), ["coredns-4"]),
    (Filters(outcome="failed"), ["evil-5"]),
    (Filters(rule="Terminal shell in container", outcome="done"), ["web-8", "web-1"]),
    (Filters(namespace="prod", action="kill", outcome="dry-run"), ["api-2"]),
    (Filters(text="shadow"), ["api-3", "api-2"]),
    (Filters(text="containerd-shim dropper"), ["evil-5"]),  # words from output_fields too
    (Filters(text='"unbalanced AND ( OR'), []),  # FTS syntax is never interpreted
    (Filters(since_ns=T0 + 3 * 60 * 10**9, until_ns=T0 + 6 * 60 * 10**9),
     ["evil-5", "coredns-4", "api-3"]),
    (Filters(since_ns=T0 + 3 * 60 * 10**9, until_ns=T0 + 6 * 60 * 10**9, outcome="failed"),
     ["evil-5"]),
])
def test_filters_select_exactly(seeded, filters, expected):
    assert pods(query.list_detections(seeded, filters)) == expected


def test_keyset_pages_walk_everything_once_both_ways(seeded):
    seen = []
    page = query.list_detections(seeded, Filters(), limit=3)
    assert page.newer is None
    pages = [pods(page)]
    while page.older:
        page = query.list_detections(seeded, Filters(), before=page.older, limit=3)
        pages.append(pods(page))
    seen = [p for chunk in pages for p in chunk]
    assert seen == ["web-8", "curl-7", "xss-6", "evil-5", "coredns-4", "api-3", "api-2", "web-1"]
    assert pages == [seen[0:3], seen[3:6], seen[6:8]]
    back = query.list_detections(seeded, Filters(), after=page.newer, limit=3)
    assert pods(back) == seen[3:6]


def test_response_driven_pages_do_not_repeat_a_detection(seeded):
    # evil-5 has a dry-run decision and a dry-run action: it must appear once per listing.
    page = query.list_detections(seeded, Filters(outcome="dry-run"), limit=1)
    assert pods(page) == ["evil-5"]
    page = query.list_detections(seeded, Filters(outcome="dry-run"), before=page.older, limit=1)
    assert pods(page) == ["api-2"]
    assert page.older is None


def test_detail_has_everything(seeded):
    det_id = seeded.execute("SELECT id FROM detections WHERE pod = 'web-1'").fetchone()[0]
    det = query.get_detection(seeded, det_id)
    assert det["output_fields"]["proc.name"] == "bash"
    kinds = [(r["kind"], r["action"], r["outcome_class"], r["retries"], r["latency_ms"])
             for r in det["responses"]]
    assert kinds == [("match", None, None, 0, 1.2),
                     ("decision", None, None, 0, None),
                     ("action", "snapshot", "done", 0, 12.5),
                     ("action", "kill", "done", 1, 3.25)]
    kill = det["responses"][3]
    assert kill["would"] == {"syscall": "pidfd_send_signal", "signal": "KILL", "pid": 4242}
    assert kill["target"] == {"pid": 4242, "start_ticks": 1795428060}
    assert det["trace_id"] == f"{0xa1:032x}"


def test_dry_run_view_lists_what_would_have_been_done(seeded):
    summary = query.dry_run_summary(seeded, Filters())
    assert [(r["policy"], r["action"], r["n"]) for r in summary] == [
        ("isolate-dropper", "networkpolicy", 1), ("kill-readers", "kill", 1)]
    examples = query.dry_run_examples(seeded, "kill-readers", Filters())
    assert [(e["action"], e["target"], e["would"]) for e in examples] == [
        ("kill", {"pid": 4242, "start_ticks": 1795428120},
         {"syscall": "pidfd_send_signal", "signal": "KILL", "pid": 4242})]


def test_counts_over_time(seeded):
    counts = query.counts_over_time(seeded, "rule", T0, T0 + 600 * 10**9, 600 * 10**9)
    assert sorted((v, n) for _, v, n in counts) == [
        ("Contact K8S API Server From Container", 1),
        ("Drop and execute new binary in container", 1),
        ("Read sensitive file untrusted", 2), ("Terminal shell in container", 4)]
    by_outcome = query.counts_over_time(seeded, "outcome", T0, T0 + 600 * 10**9, 600 * 10**9)
    assert dict((v, n) for _, v, n in by_outcome)["dry-run"] == 2


def test_distinct_values(seeded):
    assert query.distinct_values(seeded, "namespace") == ["dev", "kube-system", "prod"]
    assert query.distinct_values(seeded, "action") == ["delete_pod", "kill", "networkpolicy",
                                                       "snapshot"]


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_free_text_is_a_search_never_an_error(seeded, text):
    page = query.list_detections(seeded, Filters(text=text))
    assert len(page.rows) <= 8
