"""The responder end to end with a real webhook server: rate limits, dry-run, missing
fields, queue overflow and the audit trail (one JSONL record per decision and outcome)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from enforcer.alert import Alert
from enforcer.audit.jsonl import JsonlAudit, read_audit
from enforcer.policy.loader import load_policies
from enforcer.priority import Priority
from enforcer.respond.responder import Responder


class Hook:
    """A webhook receiver that counts POSTs (optionally answering 503 first)."""

    def __init__(self, fail_first: int = 0, code: int = 503) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.code = code
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hook.fail_first:
                    hook.fail_first -= 1
                    self.send_response(hook.code)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                hook.bodies.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


def make_alert(i: int = 0, **event: Any) -> Alert:
    fields = {"proc.pid": 999_999_0 + i, "container.id": f"c{i}"} | event
    return Alert(rule="Read sensitive file untrusted", priority=Priority.WARNING,
                 output=f"read by pid {i}", output_fields={}, time_ns=time.time_ns(),
                 tags=("filesystem",), event=fields)


def policies(tmp_path: Path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return load_policies([path])


def run(responder: Responder, alerts: list[Alert]) -> None:
    responder.start()
    for a in alerts:
        responder.submit(a)
    responder.drain()
    responder.stop()


def test_a_burst_of_1000_yields_exactly_the_rate_limit(tmp_path: Path, hook: Hook) -> None:
    ps = policies(tmp_path, f"""
- policy: tell
  match: {{rules: [Read sensitive file untrusted]}}
  actions: [{{notify: {{url: "{hook.url}"}}}}]
  dry_run: false
  rate_limit: {{max: 7, per: 1h, burst: 7}}
""")
    audit_path = tmp_path / "audit.jsonl"
    audit = JsonlAudit(audit_path)
    responder = Responder(ps, audit, node_name="n1")
    run(responder, [make_alert(i) for i in range(1000)])
    audit.close()
    assert len(hook.bodies) == 7
    records = read_audit(audit_path)
    limited = [r for r in records if r["kind"] == "decision" and r["outcome"] == "rate-limited"]
    done = [r for r in records if r["kind"] == "action" and r["outcome"] == "done"]
    assert len(limited) == 993 and len(done) == 7
    assert all(r["policy"] == "tell" and "rate limit 7" in r["reason"] for r in limited)
    stats = responder.stats()
    assert stats["matches"] == 1000
    assert stats["decisions"]["rate-limited"] == 993
    assert stats["actions"]["notify"]["done"] == 7
    assert responder.summary() == ("responses: 1000 matches answered; 0 dropped; 7 act; "
                                   "993 rate-limited; notify: done 7")


def test_dry_run_still_notifies_and_says_so(tmp_path: Path, hook: Hook) -> None:
    ps = policies(tmp_path, f"""
- policy: tell
  match: {{rules: ["Read*"]}}
  actions: [{{notify: {{url: "{hook.url}"}}}}]
""")
    audit_path = tmp_path / "audit.jsonl"
    audit = JsonlAudit(audit_path)
    run(Responder(ps, audit), [make_alert()])
    audit.close()
    (body,) = hook.bodies
    assert body["dry_run"] is True
    assert body["alert"]["rule"] == "Read sensitive file untrusted"
    decision = [r for r in read_audit(audit_path) if r["kind"] == "decision"][0]
    assert decision["dry_run"] is True and decision["reason"] == "policy dry_run"


def test_global_dry_run_wins_over_policy(tmp_path: Path, hook: Hook) -> None:
    ps = policies(tmp_path, f"""
- policy: tell
  match: {{rules: ["Read*"]}}
  actions: [{{notify: {{url: "{hook.url}"}}}}]
  dry_run: false
""")
    audit_path = tmp_path / "audit.jsonl"
    audit = JsonlAudit(audit_path)
    run(Responder(ps, audit, dry_run=True), [make_alert()])
    assert hook.bodies[0]["dry_run"] is True
    assert [r for r in read_audit(audit_path) if r["kind"] == "decision"][0]["reason"] == \
        "global dry-run"


def test_missing_fields_skip_and_are_audited(tmp_path: Path) -> None:
    ps = policies(tmp_path, """
- policy: evict
  match: {rules: ["Read*"]}
  actions: [delete_pod, kill]
  dry_run: false
""")
    audit_path = tmp_path / "audit.jsonl"
    audit = JsonlAudit(audit_path)
    a = Alert(rule="Read sensitive file untrusted", priority=Priority.WARNING, output="",
              output_fields={}, time_ns=time.time_ns(), event={"proc.name": "cat"})
    run(Responder(ps, audit), [a])
    actions = [r for r in read_audit(audit_path) if r["kind"] == "action"]
    assert [(r["action"], r["outcome"]) for r in actions] == [("delete_pod", "skipped"),
                                                             ("kill", "skipped")]
    assert actions[0]["detail"]["missing_fields"] == ["k8s.ns.name", "k8s.pod.name"]


def test_temporary_failures_are_retried_then_done(tmp_path: Path) -> None:
    server = Hook(fail_first=2)
    try:
        ps = policies(tmp_path, f"""
- policy: tell
  match: {{rules: ["Read*"]}}
  actions: [{{notify: {{url: "{server.url}"}}}}]
""")
        audit_path = tmp_path / "audit.jsonl"
        run(Responder(ps, JsonlAudit(audit_path)), [make_alert()])
        (rec,) = [r for r in read_audit(audit_path) if r["kind"] == "action"]
        assert rec["outcome"] == "done" and rec["retries"] == 2
        assert rec["detail"]["retry_waits"] == [0.0, 0.0], "Retry-After: 0 was honoured"
    finally:
        server.close()


def test_a_full_queue_drops_counts_and_audits(tmp_path: Path, hook: Hook) -> None:
    ps = policies(tmp_path, f"""
- policy: tell
  match: {{rules: ["Read*"]}}
  actions: [{{notify: {{url: "{hook.url}"}}}}]
""")
    audit_path = tmp_path / "audit.jsonl"
    # a match without kills waits on the slow lane (its own bound, its own drops)
    responder = Responder(ps, JsonlAudit(audit_path), queue_size=3, slow_lane_size=3)
    for i in range(10):  # worker not started: the queue fills
        responder.submit(make_alert(i))
    run(responder, [])
    records = read_audit(audit_path)
    assert responder.stats()["dropped"] == 7
    assert len([r for r in records if r["kind"] == "drop"]) == 7
    assert len(hook.bodies) == 3


def test_unmatched_alerts_cost_nothing(tmp_path: Path, hook: Hook) -> None:
    ps = policies(tmp_path, f"""
- policy: tell
  match: {{rules: [Something else]}}
  actions: [{{notify: {{url: "{hook.url}"}}}}]
""")
    audit_path = tmp_path / "audit.jsonl"
    responder = Responder(ps, JsonlAudit(audit_path))
    run(responder, [make_alert()])
    assert read_audit(audit_path) == [] and responder.stats()["matches"] == 0


def test_cooldown_per_target(tmp_path: Path, hook: Hook) -> None:
    ps = policies(tmp_path, f"""
- policy: tell
  match: {{rules: ["Read*"]}}
  actions: [{{notify: {{url: "{hook.url}"}}}}, {{delete_pod: {{}}}}]
  cooldown: 1h
""")
    audit_path = tmp_path / "audit.jsonl"
    run(Responder(ps, JsonlAudit(audit_path)), [make_alert(1), make_alert(2)])
    outcomes = [(r["action"], r["outcome"]) for r in read_audit(audit_path)
                if r["kind"] == "action"]
    # notify has no target fields: one per policy per hour; delete_pod lacks its pod fields
    # (two workloads: their slow-lane work runs side by side, in either order)
    assert sorted(outcomes) == [("delete_pod", "skipped"), ("delete_pod", "skipped"),
                                ("notify", "cooldown"), ("notify", "done")]
    assert len(hook.bodies) == 1


def test_on_failure_stop_skips_the_rest(tmp_path: Path) -> None:
    broken = Hook(fail_first=10, code=400)
    good = Hook()
    try:
        ps = policies(tmp_path, f"""
- policy: tell
  match: {{rules: ["Read*"]}}
  actions: [{{notify: {{url: "{broken.url}"}}}}, {{notify: {{url: "{good.url}"}}}}]
  on_failure: stop
""")
        audit_path = tmp_path / "audit.jsonl"
        run(Responder(ps, JsonlAudit(audit_path)), [make_alert()])
        records = read_audit(audit_path)
        (failed,) = [r for r in records if r["kind"] == "action"]
        assert failed["outcome"] == "failed" and "400" in failed["error"]
        assert failed["retries"] == 0, "a 400 is permanent: never retried"
        assert [r["outcome"] for r in records if r["kind"] == "decision"] == ["act", "stopped"]
        assert good.bodies == []
    finally:
        broken.close()
        good.close()


def test_matches_still_queued_at_stop_are_audited_as_dropped(tmp_path: Path) -> None:
    """The slow lane's workers are stuck on a slow webhook when the agent stops: the
    matches behind them get a `drop` record each, so the audit log accounts for every
    match (each one the webhook saw is in flight, every other is dropped)."""
    arrived, release = threading.Event(), threading.Event()
    seen: list[int] = []

    class Slow(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(1)
            arrived.set()
            release.wait(30)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ps = policies(tmp_path, f"""
- policy: tell
  match: {{rules: ["Read*"]}}
  actions: [{{notify: {{url: "http://127.0.0.1:{server.server_address[1]}/", timeout: 30}}}}]
""")
        audit_path = tmp_path / "audit.jsonl"
        responder = Responder(ps, JsonlAudit(audit_path))
        responder.start()
        for i in range(5):
            responder.submit(make_alert(i))
        assert arrived.wait(30)
        responder.stop(timeout=0.2)
        drops = [r for r in read_audit(audit_path) if r["kind"] == "drop"]
        in_flight = 5 - len(drops)
        assert 1 <= in_flight <= 2  # the slow lane's two threads, each stuck on one
        deadline = time.monotonic() + 10  # a thread may have taken its match, not yet sent
        while len(seen) < in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(seen) == in_flight  # each match not dropped did reach the webhook
        assert all(r["outcome"] == "dropped" and "stopped" in r["reason"] for r in drops)
        assert responder.stats()["dropped"] == 5 - in_flight
    finally:
        release.set()
        server.shutdown()
        server.server_close()
