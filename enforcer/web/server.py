"""One HTTP/1.1 listener serving a WSGI application: asyncio holds the connections, h11
parses them, a small thread pool runs the application.

Why not a thread per connection (http.server, wsgiref) or a WSGI server from PyPI: an idle
or slow client must cost a few KiB and no thread, and at the connection cap the newest
client (the kubelet's probe) must still get in. cheroot hands every new connection to a
worker thread that blocks reading its first line and runs TLS handshakes on its accept
loop; waitress has no TLS (the falco-http intake needs mTLS) and stops accepting at its
connection limit. Here every connection lives in the event loop until its request is
complete; only then does a worker run the application.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import h11

from enforcer.web.limits import Limits

log = logging.getLogger(__name__)

WSGIApp = Callable[..., Iterable[bytes]]
# Told about answers the server gives on its own (400, 408, 413, 431, "tls_refused"), so an
# application that counts its answers by code sees them too.
OnReject = Callable[[int | str], None]

# The WSGI environ key that holds the client certificate (ssl.SSLSocket.getpeercert() form)
# of a TLS connection that presented one.
PEERCERT = "enforcer.peercert"

_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


def _raw_answer(code: int, message: str) -> bytes:
    """A complete HTTP/1.1 answer that closes the connection (when h11 cannot frame one)."""
    # JSON, as the falco-http intake answers (Falcosidekick logs the body of an error).
    body = (json.dumps({"code": code, "message": message}) + "\n").encode()
    return (f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


class _Connection(asyncio.Protocol):
    """One client connection: reads a request within its limits, hands it to a worker,
    writes the answer, and waits (idle) for the next."""

    def __init__(self, server: WsgiServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.h11 = h11.Connection(h11.SERVER,
                                  max_incomplete_event_size=server.limits.max_header_bytes)
        self.busy = False       # a worker is answering a request of ours
        self.started = False    # bytes of the current request have arrived
        self.request: h11.Request | None = None
        self.body = bytearray()
        self.timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks (event loop thread) --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.server.admit(self):
            transport.abort()
            return
        self._arm(self.server.limits.request_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self._disarm()

    def data_received(self, data: bytes) -> None:
        self.started = True
        try:
            self.h11.receive_data(data)
        except h11.RemoteProtocolError:
            self._reject(400, "malformed HTTP request")
            return
        self._advance()

    def eof_received(self) -> bool | None:
        try:
            self.h11.receive_data(b"")
        except h11.RemoteProtocolError:
            pass
        if not self.busy:
            self._advance()
        return True  # keep the transport open for an answer still being made

    # -- the request cycle --

    def _advance(self) -> None:
        """Consume parsed events until a whole request is in (then dispatch) or more bytes
        are needed."""
        limits = self.server.limits
        while not self.busy and self.transport is not None:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                code = exc.error_status_hint
                self._reject(code if code in (413, 431) else 400,
                             "request headers too large" if code == 431
                             else "malformed HTTP request")
                return
            if event is h11.NEED_DATA:
                if (self.request is not None
                        and self.h11.they_are_waiting_for_100_continue):
                    self._write(self.h11.send(h11.InformationalResponse(
                        status_code=100, headers=[])))
                return
            if event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.started = True
                self._arm(limits.request_timeout)
                self.request = event
                self.body = bytearray()
                # h11 bounds a head that arrives in pieces; one that arrives whole is
                # measured here.
                head = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
                if head > limits.max_header_bytes:
                    self._reject(431, "request headers too large")
                    return
                length = _content_length(event)
                if length is not None and length > limits.max_body:
                    self._reject(413, f"body of {length} bytes exceeds the limit of "
                                 f"{limits.max_body} bytes")
                    return
            elif isinstance(event, h11.Data):
                self.body += event.data
                if len(self.body) > limits.max_body:
                    self._reject(413, f"body exceeds the limit of {limits.max_body} bytes")
                    return
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
                return
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    def _dispatch(self) -> None:
        assert self.request is not None and self.transport is not None
        self.busy = True
        self._disarm()  # the application's time is not the client's fault
        self.transport.pause_reading()
        environ = self.server.environ(self.request, bytes(self.body), self.transport)
        self.body = bytearray()
        future = self.server.loop.run_in_executor(self.server.pool, self.server.call_app,
                                                  environ)
        future.add_done_callback(self._answer)

    def _answer(self, future: asyncio.Future[tuple[int, list[tuple[str, str]], bytes]]
                ) -> None:
        self.busy = False
        if self.transport is None or self.transport.is_closing():
            return
        code, headers, body = future.result()
        request = self.request
        assert request is not None
        out = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers
               if name.lower() not in ("content-length", "transfer-encoding")]
        out.append((b"content-length", str(len(body)).encode()))
        try:
            data = self.h11.send(h11.Response(status_code=code, headers=out,
                                              reason=_reason(code)))
            if body and request.method != b"HEAD":
                data += self.h11.send(h11.Data(data=body))
            data += self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            log.warning("http: cannot send the answer to %s %r: %s", request.method,
                        request.target, exc)
            self._close()
            return
        self._write(data)
        if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is not h11.DONE:
            # An unread body, Connection: close, or HTTP/1.0: this exchange ends here.
            self._close_after_write()
            return
        self.h11.start_next_cycle()
        self.request = None
        self.started = False
        self._arm(self.server.limits.idle_timeout)
        self.transport.resume_reading()
        self._advance()  # a pipelined request may already be buffered

    # -- ending --

    def _reject(self, code: int, message: str) -> None:
        self.server.rejected(code)
        self._write(_raw_answer(code, message))
        self._close_after_write()

    def _close_after_write(self) -> None:
        if self.transport is None:
            return
        self.transport.pause_reading()
        self.transport.close()  # flushes what is buffered, then closes
        # A client that does not read its answer must not hold the socket forever.
        self._arm(self.server.limits.write_timeout, abort=True)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def expire(self) -> None:
        """The connection's time is up: say 408 to a half-sent request, else just close."""
        self.timer = None
        if self.transport is None or self.busy:
            return
        if self.transport.is_closing():
            self.transport.abort()
        elif self.started:
            self._reject(408, "request not received in time")
        else:
            self.transport.abort()

    def evict(self) -> None:
        """Make room for a newer client (the connection cap is reached)."""
        self.server.evicted += 1
        if self.transport is not None:
            self.transport.abort()

    # -- helpers --

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _arm(self, seconds: float, abort: bool = False) -> None:
        self._disarm()
        loop = self.server.loop
        self.timer = loop.call_later(seconds, self._abort if abort else self.expire)

    def _abort(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.transport.abort()

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _reason(code: int) -> bytes:
    try:
        return HTTPStatus(code).phrase.encode()
    except ValueError:
        return b""


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class WsgiServer:
    """Serves `app` on (host, port) from its own event loop thread.

    Binding happens in the constructor, so an address in use raises OSError at once.
    """

    def __init__(self, app: WSGIApp, host: str, port: int, limits: Limits | None = None, *,
                 ssl_context: ssl.SSLContext | None = None, name: str = "http",
                 on_reject: OnReject | None = None):
        self.app = app
        self.limits = limits or Limits()
        self.name = name
        self.on_reject = on_reject
        self.evicted = 0  # connections closed to make room under the cap
        self._connections: dict[_Connection, None] = {}  # insertion order = age
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=1024)
        self.host, self.port = self._sock.getsockname()[:2]
        self.url_scheme = "https" if ssl_context is not None else "http"
        self.pool = ThreadPoolExecutor(max_workers=self.limits.workers,
                                       thread_name_prefix=f"enforcer-{name}")
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_error)
        self._listener = self.loop.run_until_complete(self.loop.create_server(
            lambda: _Connection(self), sock=self._sock, ssl=ssl_context,
            ssl_handshake_timeout=(self.limits.tls_handshake_timeout
                                   if ssl_context is not None else None)))
        self._thread = threading.Thread(target=self.loop.run_forever,
                                        name=f"enforcer-{name}", daemon=True)

    def start(self) -> WsgiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection, and end the thread."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(timeout=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        else:
            self.loop.run_until_complete(self._shutdown())
        self.loop.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _shutdown(self) -> None:
        self._listener.close()
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.abort()
        await self._listener.wait_closed()

    @property
    def connections(self) -> int:
        return len(self._connections)

    # -- called by connections, on the loop thread --

    def admit(self, conn: _Connection) -> bool:
        """Take `conn` in; at the cap, evict the oldest connection that is not being
        answered. False when every held connection is busy (the newcomer is refused)."""
        if len(self._connections) >= self.limits.max_connections:
            victim = next((c for c in self._connections if not c.busy), None)
            if victim is None:
                self.rejected(503)
                return False
            self._connections.pop(victim, None)
            victim.evict()
        self._connections[conn] = None
        return True

    def forget(self, conn: _Connection) -> None:
        self._connections.pop(conn, None)

    def rejected(self, code: int | str) -> None:
        if self.on_reject is not None:
            try:
                self.on_reject(code)
            except Exception:  # noqa: BLE001 - counting must never break serving
                log.exception("http %s: on_reject failed", self.name)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError)):
            # A refused client certificate, a plain-HTTP client on a TLS port, a handshake
            # that never finished: counted, not a traceback.
            if self.url_scheme == "https":
                self.rejected("tls_refused")
            log.debug("http %s: %s: %s", self.name, context.get("message"), exc)
            return
        loop.default_exception_handler(context)

    # -- WSGI --

    def environ(self, request: h11.Request, body: bytes,
                transport: asyncio.Transport) -> dict[str, Any]:
        """The WSGI environ of one complete request."""
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        peer = transport.get_extra_info("peername") or ("", 0)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method.decode("ascii"),
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, encoding="latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": str(self.host),
            "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": "HTTP/" + request.http_version.decode("ascii"),
            "REMOTE_ADDR": str(peer[0]),
            "REMOTE_PORT": str(peer[1]),
            # A body without Content-Length (chunked) is given its length; none, "".
            "CONTENT_LENGTH": str(len(body)) if body else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": self.url_scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        peercert = transport.get_extra_info("peercert")
        if peercert:
            environ[PEERCERT] = peercert
        for raw_name, raw_value in request.headers:
            name = raw_name.decode("latin-1").upper().replace("-", "_")
            value = raw_value.decode("latin-1")
            if name == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            elif name == "CONTENT_LENGTH":
                environ["CONTENT_LENGTH"] = value  # h11 checked it against the body
            else:
                key = "HTTP_" + name
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def call_app(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        """Run the application on a worker thread: (status code, headers, body)."""
        state: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], None]:
            state["status"], state["headers"] = status, headers
            return chunks.append

        chunks: list[bytes] = []
        try:
            result = self.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            code = int(state["status"].split(None, 1)[0])
            return code, list(state["headers"]), b"".join(chunks)
        except Exception:  # noqa: BLE001 - one bad request must not stop the server
            log.exception("http %s: %s %s failed", self.name, environ.get("REQUEST_METHOD"),
                          environ.get("PATH_INFO"))
            return 500, [("Content-Type", "text/plain; charset=utf-8")], \
                b"internal error; see the agent's log\n"
