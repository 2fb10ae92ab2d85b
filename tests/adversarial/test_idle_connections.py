"""Threat: anyone who reaches the agent's port (0.0.0.0:9376 on every node) opens thousands
of connections and sends nothing. With a thread per connection and no timeout, the agent
runs out of threads and memory and /healthz stops answering: the kubelet's liveness probe
fails and the agent is restarted again and again, which switches detection off."""

from __future__ import annotations

import http.client
import socket

from tests.adversarial.conftest import raise_nofile, rss_kib
from tests.agent_process import AgentProcess

IDLE = 2000
# What 2 000 idle connections may add to the agent's resident memory. The server holds at
# most its connection cap (256) of them, a few KiB each; a thread per connection would cost
# far more (8 MiB stack reservations, tens of KiB resident each).
RSS_GROWTH_BOUND_KIB = 16 * 1024


def _probe(port: int, path: str) -> int | None:
    """One kubelet-style probe: 1 s timeout (the kubelet's default timeoutSeconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def _liveness_holds(port: int) -> bool:
    # The kubelet restarts the pod after failureThreshold (3) consecutive failed probes.
    return any(_probe(port, "/healthz") == 200 for _ in range(3))


def _open_idle(port: int, n: int) -> list[socket.socket]:
    held = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        held.append(sock)
    return held


def test_idle_connections_do_not_starve_the_probes(agent: AgentProcess) -> None:
    assert agent.http_port is not None
    raise_nofile(2 * IDLE + 256)
    assert _liveness_holds(agent.http_port)
    before = rss_kib(agent.proc.pid)
    held = _open_idle(agent.http_port, IDLE)
    try:
        assert _liveness_holds(agent.http_port), "/healthz did not answer within 1 s"
        assert _probe(agent.http_port, "/readyz") == 200
        grown = rss_kib(agent.proc.pid) - before
        print(f"agent RSS {before} KiB before, +{grown} KiB with {IDLE} idle connections")
        assert grown < RSS_GROWTH_BOUND_KIB, f"RSS grew by {grown} KiB"
        # Half-sent requests are idle connections too.
        for sock in held[:100]:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        assert _liveness_holds(agent.http_port)
    finally:
        for sock in held:
            sock.close()
    assert agent.proc.poll() is None


def test_idle_connections_do_not_starve_the_falco_intake(agent: AgentProcess) -> None:
    """The same attack on the falco-http port: alerts from Falco still get in."""
    assert agent.falco_port is not None
    raise_nofile(2 * IDLE + 256)
    held = _open_idle(agent.falco_port, IDLE)
    try:
        alert = (b'{"rule": "Terminal shell in container", "priority": "Notice", '
                 b'"output": "x", "output_fields": {}, "hostname": "node-a"}')
        conn = http.client.HTTPConnection("127.0.0.1", agent.falco_port, timeout=5)
        conn.request("POST", "/", body=alert, headers={"Content-Type": "application/json"})
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        for sock in held:
            sock.close()
