"""Serve the console on its own port (`enforcer ui`), on the agent's HTTP stack."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from enforcer.web.server import WsgiServer

WSGIApp = Callable[..., Iterable[bytes]]
log = logging.getLogger(__name__)


def _logged(app: WSGIApp) -> WSGIApp:
    """`app`, logging one line per request (path and code) on the enforcer.console logger."""
    from enforcer.outputs.escape import escape_control  # noqa: PLC0415

    def wrapper(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            # The path is the client's text: escaped, so it cannot forge log lines.
            log.info("%s %s %s %s", environ.get("REMOTE_ADDR", "-"),
                     environ.get("REQUEST_METHOD"),
                     escape_control(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")),
                     status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wrapper


def make_console_server(app: WSGIApp, host: str, port: int, quiet: bool = False) -> WsgiServer:
    """A server for `app` bound to host:port (port 0 picks a free one); call start()."""
    return WsgiServer(app if quiet else _logged(app), host, port, name="console")
