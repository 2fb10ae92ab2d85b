"""End to end with the real responder: its audit records, and the alerts, reach the store both
live (the writer as an AuditSink next to the JSONL log) and by `enforcer audit import` of the
JSONL log and the alerts file; the two stores agree and the console shows what happened."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from enforcer.alert import Alert
from enforcer.audit.jsonl import JsonlAudit
from enforcer.audit.record import FanOut
from enforcer.console.app import ConsoleApp
from enforcer.policy.loader import load_policies
from enforcer.priority import Priority
from enforcer.respond.responder import Responder
from enforcer.store.schema import connect
from enforcer.store.writer import StoreWriter

READ, SHELL = "Read sensitive file untrusted", "Terminal shell in container"


@pytest.fixture
def hook_url():
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def _alerts() -> list[Alert]:
    now = time.time_ns()
    alerts = []
    for i in range(4):
        fields = {"proc.name": "cat", "proc.pid": 900_000 + i, "k8s.ns.name": "prod",
                  "k8s.pod.name": f"reader-{i}"}
        alerts.append(Alert(rule=READ, priority=Priority.WARNING,
                            output=f"Sensitive file opened (pod=reader-{i})",
                            output_fields=fields, time_ns=now + i, hostname="node-a",
                            event=dict(fields)))
    fields = {"proc.name": "sh", "proc.cmdline": "sh -c <script>alert(1)</script>"}
    alerts.append(Alert(rule=SHELL, priority=Priority.NOTICE,
                        output="shell <script>alert(1)</script>", output_fields=fields,
                        time_ns=now + 10, hostname="node-a", event=dict(fields)))
    return alerts


def _summary(path):
    conn = connect(path, readonly=True)
    try:
        return sorted((r["rule"], r["pod"], r["outcomes"], r["policies"], r["actions"],
                       r["complete"]) for r in conn.execute("SELECT * FROM detections"))
    finally:
        conn.close()


def test_live_store_and_imported_store_agree(tmp_path, hook_url, enforcer_cmd, cli_env,
                                             wsgi_call):
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text(f"""
- policy: tell-readers
  match: {{rules: ["{READ}"]}}
  actions: [{{notify: {{url: "{hook_url}"}}}}]
  dry_run: false
  rate_limit: {{max: 2, per: 1h, burst: 2}}
- policy: evict-shells
  match: {{rules: ["{SHELL}"]}}
  actions: [delete_pod, {{notify: {{url: "{hook_url}"}}}}]
  dry_run: true
""")
    audit_log, alerts_log = tmp_path / "audit.jsonl", tmp_path / "alerts.jsonl"
    jsonl = JsonlAudit(audit_log)
    writer = StoreWriter(tmp_path / "live.db", flush_interval_s=0.05)
    responder = Responder(load_policies([policy_file]), FanOut(jsonl, writer), node_name="n1")
    responder.start()
    with open(alerts_log, "w") as out:
        for alert in _alerts():
            # What the agent does with every alert: file output, store, responder.
            out.write(json.dumps(alert.falco_json()) + "\n")
            writer.submit_alert(alert)
            responder.submit(alert)
    responder.drain()
    responder.stop()
    assert writer.flush(30)
    writer.close()
    jsonl.close()

    imported = tmp_path / "imported.db"
    out = subprocess.run(enforcer_cmd + ["audit", "import", str(audit_log), str(alerts_log),
                                         "--store", str(imported)],
                         capture_output=True, text=True, env=cli_env)
    assert out.returncode == 0, out.stderr
    live = _summary(tmp_path / "live.db")
    assert live == _summary(imported)
    assert live == sorted([
        (READ, "reader-0", "done", "tell-readers", "notify", 1),
        (READ, "reader-1", "done", "tell-readers", "notify", 1),
        (READ, "reader-2", "rate-limited", "tell-readers", None, 1),
        (READ, "reader-3", "rate-limited", "tell-readers", None, 1),
        (SHELL, None, "dry-run,skipped", "evict-shells", "delete_pod,notify", 1),
    ])

    app = ConsoleApp(imported)
    page = wsgi_call(app, "/?outcome=rate-limited").text
    assert re.findall(r'<td class="where">prod/(reader-\d)', page) == ["reader-3", "reader-2"]
    dry = wsgi_call(app, "/dry-run").text
    assert re.findall(r'data-policy="([\w-]+)"', dry) == ["evict-shells"]
    assert re.findall(r'<tr class="would-row" data-action="(\w+)">', dry) == ["notify"]
    shell_id = re.search(r'data-id="(\d+)">\s*<td class="time"><a[^>]*>[^<]*</a></td>\s*'
                         r'<td class="priority p-Notice">', wsgi_call(app, "/").text).group(1)
    detail = wsgi_call(app, f"/detection/{shell_id}").text
    assert "<script>" not in detail and "&lt;script&gt;alert(1)&lt;/script&gt;" in detail
    assert "missing_fields" in detail  # why delete_pod was skipped
