"""The agent's one HTTP server for probes and scraping: /metrics, /healthz, /readyz, and,
when enabled, the read-only web console under /ui (a WSGI app with its own token check).

It runs on its own event loop thread and a few workers (enforcer.web): a slow scraper or
thousands of idle connections never touch detection, and the probes still get in.
"""

from __future__ import annotations

import ssl
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from enforcer.health import Readiness
from enforcer.metrics import Metrics
from enforcer.web.limits import Limits
from enforcer.web.router import Router, respond, respond_json
from enforcer.web.server import WsgiServer

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


def agent_app(metrics: Metrics, readiness: Readiness, ui: Any = None,
              health_path: str | None = None) -> Router:
    """The agent's WSGI application. Other endpoints are added with `route`/`mount`.
    `health_path` (Falco's webserver.k8s_healthz_endpoint) answers as /healthz does, and
    /healthz stays: the chart's probes and ours keep working whatever a falco.yaml says."""
    router = Router(not_found="not found: try /metrics, /healthz or /readyz")

    def metrics_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return respond(start_response, 200, generate_latest(metrics.registry),
                       CONTENT_TYPE_LATEST)

    def healthz(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return respond(start_response, 200, "ok\n")

    def readyz(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        state = readiness.snapshot()
        return respond_json(start_response, 200 if state["ready"] else 503, state)

    router.route("/metrics", metrics_app)
    router.route("/healthz", healthz)
    if health_path and health_path not in ("/healthz", "/readyz", "/metrics"):
        router.route(health_path, healthz)
    router.route("/readyz", readyz)
    if ui is not None:
        router.mount(UI_MOUNT, ui)
    return router


class HttpServer:
    """Serves metrics and probes on `addr` ("HOST:PORT") from a background thread."""

    def __init__(self, addr: str, metrics: Metrics, readiness: Readiness, ui: Any = None,
                 limits: Limits | None = None, *, health_path: str | None = None,
                 ssl_context: ssl.SSLContext | None = None):
        """`ui`: a WSGI app (enforcer.console.app.ConsoleApp) to serve under /ui, or None.
        `ssl_context`: serve HTTPS (see tls_context)."""
        host, port = parse_addr(addr)
        self.app = agent_app(metrics, readiness, ui, health_path)
        self._server = WsgiServer(self.app, host, port, limits, ssl_context=ssl_context,
                                  name="http")

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.port)

    @property
    def server(self) -> WsgiServer:
        return self._server

    def start(self) -> HttpServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()


def start_http_server(addr: str, metrics: Metrics, readiness: Readiness,
                      ui: Any = None, *, health_path: str | None = None,
                      ssl_context: ssl.SSLContext | None = None) -> HttpServer:
    """Bind and start; raises OSError (address in use, permission) for the caller to report."""
    return HttpServer(addr, metrics, readiness, ui, health_path=health_path,
                      ssl_context=ssl_context).start()


def tls_context(pem: str) -> ssl.SSLContext:
    """A server context from one PEM file holding the certificate chain and its key, as
    Falco's webserver.ssl_certificate. Raises ValueError with what to do."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(pem)  # keyfile None: the key is read from the same file
    except ssl.SSLError as exc:
        raise ValueError(f"{pem} is not a PEM file holding a certificate and its key "
                         f"({exc.reason or exc}); make one with `cat certificate.pem key.pem "
                         "> falco.pem`") from None
    except OSError as exc:
        raise ValueError(f"cannot read {pem}: {exc.strerror or exc}; point "
                         "webserver.ssl_certificate at the PEM file holding the certificate "
                         "and its key") from None
    return context
