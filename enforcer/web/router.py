"""Paths to small WSGI applications: exact routes and mounted prefixes.

    router = Router()
    router.route("/healthz", healthz)                 # GET and HEAD
    router.route("/policies/resume", resume, methods=("POST",))
    router.mount("/ui", console)                      # /ui and everything below it
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[..., Iterable[bytes]]
StartResponse = Callable[..., Any]

_STATUS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           411: "Length Required", 413: "Content Too Large", 429: "Too Many Requests",
           500: "Internal Server Error", 503: "Service Unavailable"}


def status_line(code: int) -> str:
    """`404` -> `404 Not Found` (WSGI's status string)."""
    return f"{code} {_STATUS.get(code, 'Status')}"


def respond(start_response: StartResponse, code: int, body: bytes | str,
            content_type: str = "text/plain; charset=utf-8",
            headers: dict[str, str] | None = None) -> list[bytes]:
    """Start a complete answer and return its body, for `return respond(...)`."""
    data = body.encode() if isinstance(body, str) else body
    start_response(status_line(code), [("Content-Type", content_type),
                                       ("Content-Length", str(len(data))),
                                       *(headers or {}).items()])
    return [data]


def respond_json(start_response: StartResponse, code: int, doc: Any,
                 headers: dict[str, str] | None = None) -> list[bytes]:
    """Answer with `doc` as JSON."""
    return respond(start_response, code, json.dumps(doc, sort_keys=True) + "\n",
                   "application/json", headers)


class Router:
    """A WSGI application that dispatches on the path (and method) to others."""

    def __init__(self, not_found: str = "not found"):
        self._routes: dict[str, tuple[WSGIApp, tuple[str, ...]]] = {}
        self._mounts: list[tuple[str, WSGIApp]] = []
        self._not_found = not_found

    def route(self, path: str, app: WSGIApp, methods: tuple[str, ...] = ("GET", "HEAD")
              ) -> None:
        """Serve `path` exactly with `app`; other methods get 405."""
        self._routes[path] = (app, methods)

    def mount(self, prefix: str, app: WSGIApp) -> None:
        """Serve `prefix` and every path below it with `app` (SCRIPT_NAME = prefix)."""
        self._mounts.append((prefix.rstrip("/"), app))

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        found = self._routes.get(path)
        if found is not None:
            app, methods = found
            if environ["REQUEST_METHOD"] not in methods:
                return respond(start_response, 405, f"use {' or '.join(methods)}\n",
                               headers={"Allow": ", ".join(methods)})
            return app(environ, start_response)
        for prefix, app in self._mounts:
            if path == prefix or path.startswith(prefix + "/"):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix):] or "/"
                return app(environ, start_response)
        return respond(start_response, 404, self._not_found + "\n")
