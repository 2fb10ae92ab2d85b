"""The running agent's control socket: `enforcer policies resume NAME` and `enforcer policies
status` talk to it.

A unix stream socket (default `<state-dir>/control.sock`, mode 0600, so only root on the
node can use it; in Kubernetes, `kubectl exec` into the agent's pod), one JSON request line
and one JSON answer line per connection:

    {"command": "status"}                  -> {"ok": true, "policies": [breaker states]}
                                              (each with kernel_in_sync when the
                                              in-kernel kill is loaded)
    {"command": "resume", "policy": NAME}  -> {"ok": true, "was": "suspended"}

A unix socket rather than an HTTP endpoint: the HTTP server listens on the network for
probes and scraping, and a command that re-arms enforcement must not be reachable from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

MAX_REQUEST = 4096
TIMEOUT_S = 5.0


class ControlServer:
    """Serves the control socket for a responder on a daemon thread."""

    def __init__(self, path: str | Path, responder: Any):
        self.path = Path(path)
        self.responder = responder
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> ControlServer:
        """Bind (replacing a stale socket file) and serve. OSError when it cannot."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket():
            try:  # another agent's, alive: never take it over
                request(self.path, {"command": "status"})
            except OSError:
                self.path.unlink()  # stale: left by an agent that is gone
            else:
                raise OSError(f"another agent serves {self.path}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(8)
        self.sock = sock
        self.thread = threading.Thread(target=self._serve, name="enforcer-control",
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _serve(self) -> None:
        while self.sock is not None:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(TIMEOUT_S)
                try:
                    answer = self.handle(_read_line(conn))
                except Exception as exc:  # noqa: BLE001 - a bad request never stops it
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(answer).encode() + b"\n")

    def handle(self, line: bytes) -> dict[str, Any]:
        """One request to its answer (testable without a socket)."""
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "the request must be one JSON object"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "the request must be one JSON object"}
        command = request.get("command")
        if command == "status":
            policies = self.responder.blast_radius.describe()
            applied = getattr(self.responder, "kernel_applied", None)
            if applied is not None:
                # whether the in-kernel kill already arms by these states: a state change
                # (cool-off over, resumed) reaches the kernel on the agent's next poll
                in_sync = applied() == self.responder.kernel_generation()
                for policy in policies:
                    policy["kernel_in_sync"] = in_sync
            return {"ok": True, "policies": policies}
        if command == "resume":
            name = request.get("policy")
            if not isinstance(name, str) or not name:
                return {"ok": False, "error": "resume needs a policy name"}
            was = self.responder.resume(name)
            if was is None:
                known = sorted(self.responder.blast_radius.breakers)
                return {"ok": False, "error": f"policy {name!r} has no breaker state (it has "
                                              "not acted since the agent started); known: "
                                              + (", ".join(known) or "none")}
            print(f"enforcer: policy {name!r} resumed by command (was {was})",
                  file=sys.stderr, flush=True)
            return {"ok": True, "was": was}
        return {"ok": False, "error": f"unknown command {command!r}: use status or resume"}


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < MAX_REQUEST:
        chunk = conn.recv(MAX_REQUEST)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def request(path: str | Path, payload: dict[str, Any]) -> dict[str, Any]:
    """Send one request to a running agent's control socket (OSError when none listens)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT_S)
        sock.connect(str(path))
        sock.sendall(json.dumps(payload).encode() + b"\n")
        answer = _read_line(sock)
    return json.loads(answer) if answer else {"ok": False, "error": "no answer"}
