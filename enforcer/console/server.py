"""Serve the console: a small threaded WSGI server, or inside another http.server handler."""

from __future__ import annotations

import socketserver
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from wsgiref.handlers import SimpleHandler
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

WSGIApp = Callable[..., Any]


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def make_console_server(app: WSGIApp, host: str, port: int,
                        quiet: bool = False) -> WSGIServer:
    """A threaded server for `app` bound to host:port (port 0 picks a free one)."""
    handler = _QuietHandler if quiet else WSGIRequestHandler
    return make_server(host, port, app, server_class=_ThreadingServer, handler_class=handler)


def serve_mounted(handler: BaseHTTPRequestHandler, app: WSGIApp, mount: str = "/ui") -> None:
    """Answer `handler`'s request with `app`, mounted at `mount` (an agent server's /ui).

    Call it from the agent's do_GET for paths under `mount`.
    """
    path, _, query = handler.path.partition("?")
    environ = {
        "REQUEST_METHOD": handler.command,
        "SCRIPT_NAME": mount.rstrip("/"),
        "PATH_INFO": path[len(mount.rstrip("/")):] or "/",
        "QUERY_STRING": query,
        "SERVER_NAME": handler.server.server_address[0],
        "SERVER_PORT": str(handler.server.server_address[1]),
        "SERVER_PROTOCOL": handler.request_version,
        "REMOTE_ADDR": handler.client_address[0],
        "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
        "CONTENT_LENGTH": handler.headers.get("Content-Length", ""),
    }
    for key, value in handler.headers.items():
        name = "HTTP_" + key.upper().replace("-", "_")
        if name not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
            environ[name] = value
    runner = SimpleHandler(handler.rfile, handler.wfile, sys.stderr, environ,
                           multithread=True, multiprocess=False)
    runner.http_version = handler.request_version.split("/")[-1]
    runner.origin_server = True
    runner.run(app)
