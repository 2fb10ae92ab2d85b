"""The one HTTP stack on a real socket: limits answer with the right code, keep-alive and
pipelining work, and at the connection cap the newcomer gets in."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from enforcer.web.limits import Limits
from enforcer.web.router import Router, respond
from enforcer.web.server import WsgiServer


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = environ["wsgi.input"].read()
    return respond(start_response, 200, f"{environ['REQUEST_METHOD']} "
                   f"{environ['PATH_INFO']} {len(body)}\n")


def app() -> Router:
    router = Router()
    router.route("/echo", echo, methods=("GET", "HEAD", "POST"))
    router.mount("/sub", echo)
    return router


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[WsgiServer]:
    limits = getattr(request, "param", None) or Limits(
        max_connections=8, request_timeout=0.5, idle_timeout=0.5, max_header_bytes=1024,
        max_body=100)
    rejected: list[Any] = []
    srv = WsgiServer(app(), "127.0.0.1", 0, limits, on_reject=rejected.append).start()
    srv.rejected_codes = rejected  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_routes_mounts_and_methods(server: WsgiServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for method, path, status, body in [
            ("GET", "/echo", 200, b"GET /echo 0\n"),
            ("POST", "/echo", 200, b"POST /echo 5\n"),
            ("GET", "/sub/x/y", 200, b"GET /x/y 0\n"),
            ("GET", "/nope", 404, None), ("DELETE", "/echo", 405, None)]:
        conn.request(method, path, body=b"hello" if method == "POST" else None)
        resp = conn.getresponse()
        got = resp.read()
        assert resp.status == status, path
        if body is not None:
            assert got == body
    conn.request("HEAD", "/echo")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b""
    assert resp.headers["Content-Length"] == "13"  # of "HEAD /echo 0\n", not sent
    conn.close()


def test_pipelined_requests_are_answered_in_order(server: WsgiServer) -> None:
    got = raw(server.port, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
              b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
              b"GET /sub/z HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert got.count(b"HTTP/1.1 200") == 3
    assert got.index(b"GET /echo 0") < got.index(b"POST /echo 3") < got.index(b"GET /z 0")


def test_limits_answer_with_their_codes(server: WsgiServer) -> None:
    big_header = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 2048 + b"\r\n\r\n"
    assert raw(server.port, big_header).startswith(b"HTTP/1.1 431")
    too_long = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n"
    assert raw(server.port, too_long).startswith(b"HTTP/1.1 413")
    chunked = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"40\r\n" + b"a" * 64 + b"\r\n" + b"40\r\n" + b"a" * 64 + b"\r\n0\r\n\r\n")
    assert raw(server.port, chunked).startswith(b"HTTP/1.1 413")
    assert raw(server.port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert server.rejected_codes == [431, 413, 413, 400]  # type: ignore[attr-defined]


def test_a_slow_request_times_out_with_408(server: WsgiServer) -> None:
    started = time.monotonic()
    got = raw(server.port, b"GET /echo HTTP/1.1\r\nHost: x\r\n", timeout=10)
    assert got.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 9  # closed by the server, not by our timeout


def test_an_idle_connection_is_closed_silently(server: WsgiServer) -> None:
    assert raw(server.port, b"", timeout=10) == b""  # closed after request_timeout


def test_at_the_cap_the_oldest_idle_connection_makes_room(server: WsgiServer) -> None:
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5)
            for _ in range(8)]
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/echo")
        assert conn.getresponse().read() == b"GET /echo 0\n"
        conn.close()
        assert idle[0].recv(1) == b""  # the oldest was closed for the newcomer
        assert server.evicted >= 1 and server.connections <= 8
    finally:
        for sock in idle:
            sock.close()


def test_an_application_error_is_a_500_and_the_server_goes_on() -> None:
    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("bug")

    srv = WsgiServer(broken, "127.0.0.1", 0).start()
    try:
        for _ in range(2):
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
            conn.request("GET", "/")
            assert conn.getresponse().status == 500
            conn.close()
    finally:
        srv.stop()
