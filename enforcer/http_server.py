"""The agent's one HTTP server for probes and scraping: /metrics, /healthz, /readyz, and,
when enabled, the read-only web console under /ui (a WSGI app with its own token check).

It runs on its own daemon threads; a slow scraper never touches detection.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from enforcer.health import Readiness
from enforcer.metrics import Metrics

DEFAULT_HTTP_ADDR = "0.0.0.0:9376"
UI_MOUNT = "/ui"


def parse_addr(text: str, default_port: int | None = None) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `[v6]:PORT` -> (host, port). Raises ValueError with advice."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise ValueError(f"address {text!r} has no port; write HOST:PORT, e.g. "
                             "0.0.0.0:9376")
        host, port_text = text, str(default_port)
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"address {text!r}: port {port_text!r} is not a number; "
                         "write HOST:PORT") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"address {text!r}: port {port} is out of range 0-65535")
    return host, port


class _Handler(BaseHTTPRequestHandler):
    server: _ProbeServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        ui = self.server.ui
        if ui is not None and (path == UI_MOUNT or path.startswith(UI_MOUNT + "/")):
            from enforcer.console.server import serve_mounted  # noqa: PLC0415

            serve_mounted(self, ui, UI_MOUNT)
            return
        if path == "/metrics":
            body = generate_latest(self.server.metrics.registry)
            self._send(200, body, CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            state = self.server.readiness.snapshot()
            code = 200 if state["ready"] else 503
            self._send(code, (json.dumps(state, sort_keys=True) + "\n").encode(),
                       "application/json")
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n",
                       "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return  # probes every few seconds would flood the agent's log


class _ProbeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], metrics: Metrics, readiness: Readiness,
                 ui: Any = None):
        self.metrics = metrics
        self.readiness = readiness
        self.ui = ui
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, _Handler)


class HttpServer:
    """Serves metrics and probes on `addr` ("HOST:PORT") from a background thread."""

    def __init__(self, addr: str, metrics: Metrics, readiness: Readiness, ui: Any = None):
        """`ui`: a WSGI app (enforcer.console.app.ConsoleApp) to serve under /ui, or None."""
        self._server = _ProbeServer(parse_addr(addr), metrics, readiness, ui)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="enforcer-http", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_http_server(addr: str, metrics: Metrics, readiness: Readiness,
                      ui: Any = None) -> HttpServer:
    """Bind and start; raises OSError (address in use, permission) for the caller to report."""
    return HttpServer(addr, metrics, readiness, ui).start()
