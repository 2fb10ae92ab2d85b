"""The Docker-compatible Engine API over its unix socket (docker, or `podman system
service`): only container inspection, with a hard timeout."""

from __future__ import annotations

import http.client
import json
import os
import socket
from typing import Any

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
