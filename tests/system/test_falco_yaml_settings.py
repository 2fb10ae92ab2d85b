"""Falco's output and webserver settings, applied by the live agent (real eBPF) as Falco
0.44 applies them, on every output at once: Falco's shipped falco.yaml plus `-o` for
`time_format_iso_8601` (the time prefix of text lines), the four `json_include_*` keys
(the JSON the http and program outputs send), a custom `webserver.k8s_healthz_endpoint`
and `webserver.ssl_enabled` with Falco's one-PEM `ssl_certificate` (certificate and key,
made here with openssl)."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.system.test_falco_yaml_agent import (
    BUNDLED_RULES,
    FALCO_YAML,
    _wait,
    ready_port,
    spawn_collected,
)

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

ISO_PREFIX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}\+0000: Error marker opened ")


class Receiver:
    """Falco's http_output target: keeps each POSTed body."""

    def __init__(self) -> None:
        bodies: list[Any] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                size = int(self.headers.get("Content-Length", 0))
                bodies.append(json.loads(self.rfile.read(size)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def self_signed_pem(tmp_path: Path) -> tuple[Path, Path]:
    """(certificate, Falco's combined PEM: certificate then key)."""
    cert, key = tmp_path / "certificate.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-x509", "-days", "1", "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    combined = tmp_path / "falco.pem"
    combined.write_text(cert.read_text() + key.read_text())
    return cert, combined


def test_output_and_webserver_settings_apply_to_every_output(
        ebpf_ready: None, enforcer_cmd: list[str], cli_env: dict[str, str],
        tmp_path: Path) -> None:
    marker = f"i18-settings-{uuid.uuid4().hex[:8]}"
    rules = tmp_path / "marker_rules.yaml"
    rules.write_text(
        f"- rule: I18 settings marker\n  desc: a test's own marker file opened\n"
        f"  condition: evt.type in (open, openat, openat2) and fd.name startswith /tmp/{marker}\n"
        f"  output: marker opened (file=%fd.name)\n  priority: ERROR\n  tags: [i18]\n")
    cert, pem = self_signed_pem(tmp_path)
    receiver = Receiver()
    events, program = tmp_path / "events.txt", tmp_path / "program.jsonl"
    options = {
        "webserver.listen_address": "127.0.0.1", "webserver.listen_port": "0",
        "webserver.k8s_healthz_endpoint": "/custom-health",
        "webserver.ssl_enabled": "true", "webserver.ssl_certificate": str(pem),
        "syslog_output.enabled": "false",
        "time_format_iso_8601": "true",
        "json_include_output_property": "false", "json_include_tags_property": "false",
        "json_include_message_property": "true",
        "json_include_output_fields_property": "false",
        "file_output.enabled": "true", "file_output.filename": str(events),
        "http_output.enabled": "true", "http_output.url": receiver.url,
        "program_output.enabled": "true", "program_output.program": f"cat >> {program}",
    }
    argv = [*enforcer_cmd, "-c", str(FALCO_YAML),
            *(a for k, v in options.items() for a in ("-o", f"{k}={v}")),
            "-r", str(BUNDLED_RULES), "-r", str(rules), "-M", "300", "--dry-run"]
    proc, out, err = spawn_collected(argv, cli_env)
    try:
        port = ready_port(err)
        subprocess.run(["sh", "-c", f"cat /tmp/{marker} >/dev/null 2>&1; true"], check=False)
        # time_format_iso_8601: the text lines of stdout and file_output start with
        # Falco's %evt.time.iso8601
        line = _wait(lambda: next((x for x in out if f"/tmp/{marker}" in x), None),
                     "the alert on stdout")
        assert ISO_PREFIX.match(line), line
        written = _wait(lambda: events.exists() and next(
            (x for x in events.read_text().splitlines() if marker in x), None),
            "the alert in file_output")
        assert ISO_PREFIX.match(written), written
        # json_include_*: the JSON of http_output and program_output
        for what, docs in (("http_output", lambda: receiver.bodies),
                           ("program_output", lambda: [
                               json.loads(x) for x in (program.read_text().splitlines()
                                                       if program.exists() else [])])):
            doc = _wait(lambda d=docs: next((b for b in d() if b.get("rule")
                                             == "I18 settings marker"), None), what)
            # (trace_id is ours, when a trace exists)
            assert set(doc) - {"trace_id"} == {"hostname", "message", "priority", "rule",
                                               "source", "time"}, (what, doc)
            # the rule's output (with the shipped append_output) without time and priority
            assert doc["message"].startswith(f"marker opened (file=/tmp/{marker}) "
                                             "container_id=host"), (what, doc)
            assert doc["time"].endswith("Z")  # JSON time stays RFC 3339, as Falco's
        # the webserver speaks TLS with the PEM's certificate, on the custom health path
        # and on /healthz (our probes)
        trusted = ssl.create_default_context(cafile=str(cert))
        for path in ("/custom-health", "/healthz", "/metrics"):
            with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", timeout=10,
                                        context=trusted) as res:
                assert res.status == 200, path
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
    finally:
        proc.terminate()
        rc = proc.wait(60)
        receiver.close()
    stderr = "".join(err)
    assert rc == 0, stderr[-3000:]
    assert "not applied" not in stderr and "not offered" not in stderr
    assert "Traceback" not in stderr
