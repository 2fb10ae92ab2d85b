"""The Docker-compatible Engine API over its unix socket (docker, or `podman system
service`): container inspection with a hard timeout, and the container event stream."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

DEFAULT_SOCKETS = ("/run/podman/podman.sock", "/var/run/docker.sock", "/run/docker.sock")


def find_socket(explicit: str | None = None) -> str | None:
    """The runtime socket to use: explicit, $ENFORCER_CONTAINER_SOCKET, or a default."""
    candidates = explicit.split(":") if explicit else []
    env = os.environ.get("ENFORCER_CONTAINER_SOCKET")
    if env:  # the chart gives several, colon-separated (docker's and podman's)
        candidates += env.split(":")
    candidates += list(DEFAULT_SOCKETS)
    for path in candidates:
        if path and os.path.exists(path):
            return path
    return None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def inspect_container(socket_path: str, container_id: str, timeout: float) -> dict[str, Any] | None:
    """GET /containers/{id}/json; None when the runtime does not know the container.

    Raises OSError (including timeouts) when the socket cannot be used.
    """
    conn = _UnixConnection(socket_path, timeout)
    try:
        conn.request("GET", f"/containers/{container_id}/json")
        resp = conn.getresponse()
        body = resp.read()
    except http.client.HTTPException as exc:
        raise OSError(f"bad answer from {socket_path}: {exc}") from exc
    finally:
        conn.close()
    if resp.status == 404:
        return None
    if resp.status != 200:
        raise OSError(f"{socket_path} answered {resp.status} for container {container_id}")
    return json.loads(body)


def ping(socket_path: str, timeout: float = 1.0) -> bool:
    """Whether the API answers `GET /_ping`."""
    conn = _UnixConnection(socket_path, timeout)
    try:
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class EventStream:
    """`GET /events` filtered to container events: one JSON object per line, for as long
    as the runtime keeps the connection open. `close()` (from any thread) ends it."""

    def __init__(self, socket_path: str, actions: tuple[str, ...], since: int | None = None,
                 connect_timeout: float = 5.0):
        query = "filters=" + quote(json.dumps({"type": ["container"], "event": list(actions)}))
        if since is not None:
            query += f"&since={since}"  # replay what happened while we were not listening
        self._conn = _UnixConnection(socket_path, connect_timeout)
        self._lock = threading.Lock()
        self._closed = False
        self._reading = False
        try:
            self._conn.request("GET", f"/events?{query}")
            self._resp = self._conn.getresponse()
        except http.client.HTTPException as exc:
            self._conn.close()
            raise OSError(f"bad answer from {socket_path}: {exc}") from exc
        except OSError:
            self._conn.close()
            raise
        if self._resp.status != 200:
            self._conn.close()
            raise OSError(f"{socket_path} answered {self._resp.status} for /events")
        assert self._conn.sock is not None
        self._conn.sock.settimeout(None)  # events come when they come

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            if self._closed:
                self._conn.close()
                return
            self._reading = True
        try:
            yield from self._events()
        finally:
            self._conn.close()  # here, on the reader's thread: http.client is not shareable

    def _events(self) -> Iterator[dict[str, Any]]:
        while True:
            try:
                line = self._resp.readline()
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if self._closed:
                    return
                raise OSError(f"event stream broken: {exc}") from exc
            if not line:
                return
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not an event (a proxy's noise): skip, keep listening
            if isinstance(event, dict):
                yield event

    def close(self) -> None:
        """End the stream: a reader blocked on it sees the end (and closes the connection)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self._reading:
                self._conn.close()
                return
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv
            except OSError:
                pass
