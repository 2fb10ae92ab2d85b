"""Threat: a quarantined pod keeps a command channel open by talking to its own server on
port 53 (any address), since "allow DNS" used to let through any packet whose far end used
port 53. During quarantine the pod must reach only the DNS servers of the cluster: the ones
the policy names, or the node's resolver configuration.

A real network namespace "pod", two real UDP DNS responders on host-side addresses (the
configured one and a rogue one) and a TCP listener on the rogue address's port 53."""

from __future__ import annotations

import random
import socket
import struct
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from tests.system.netns_pod import NetnsPod
from tests.system.test_response_quarantine import respond, shell_alert

pytestmark = [pytest.mark.root]

ANSWER = "10.77.0.9"  # what both responders answer: which one answered is the address asked


def _answer(query: bytes) -> bytes | None:
    """A one-record A answer to a standard query (enough for the probe below)."""
    if len(query) < 12:
        return None
    end = 12
    while end < len(query) and query[end]:
        end += query[end] + 1
    question = query[12:end + 5]
    header = query[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0)
    record = struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(ANSWER)
    return header + question + record


class Responder:
    """A UDP DNS responder and a TCP listener on ADDRESS:53, in threads."""

    def __init__(self, address: str):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((address, 53))
        self.udp.settimeout(0.2)
        self.tcp = socket.socket()
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((address, 53))
        self.tcp.listen(8)
        self.tcp.settimeout(0.2)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._udp, daemon=True),
                        threading.Thread(target=self._tcp, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _udp(self) -> None:
        while not self.stop.is_set():
            try:
                query, peer = self.udp.recvfrom(512)
            except OSError:
                continue
            reply = _answer(query)
            if reply:
                self.udp.sendto(reply, peer)

    def _tcp(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.tcp.accept()
                conn.close()
            except OSError:
                continue

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.udp.close()
        self.tcp.close()


PROBE = """
import socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0"
query += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
try:
    s.sendto(query, (server, 53))
    reply = s.recv(512)
    print("udp", socket.inet_ntoa(reply[-4:]))
except OSError as e:
    print("udp none", e)
t = socket.socket()
t.settimeout(1)
try:
    t.connect((server, 53))
    print("tcp ok")
except OSError as e:
    print("tcp none", e)
"""


def _ask(pod: NetnsPod, server: str) -> tuple[bool, bool]:
    """(a UDP query through `server` resolved, a TCP connection to its port 53 opened)."""
    done = pod.run([sys.executable, "-c", PROBE, server, f"q-{uuid.uuid4().hex[:8]}.test"],
                   capture_output=True, text=True, timeout=30)
    lines = done.stdout.splitlines()
    return f"udp {ANSWER}" in lines, "tcp ok" in lines


@pytest.fixture
def dns(need_root: None) -> Iterator[dict[str, Any]]:
    pod = NetnsPod.create(subnet=random.randint(100, 199))
    rogue_ip = pod.host_ip.rsplit(".", 1)[0] + ".3"
    servers: list[Responder] = []
    try:
        with IPRoute() as ipr:
            (host,) = ipr.link_lookup(ifname=pod.host_if)
            ipr.addr("add", index=host, address=rogue_ip, prefixlen=24)
        servers = [Responder(pod.host_ip), Responder(rogue_ip)]
        yield {"pod": pod, "dns": pod.host_ip, "rogue": rogue_ip}
    finally:
        for server in servers:
            server.close()
        pod.remove()


def _both_answer_before(pod: NetnsPod, *servers: str) -> None:
    for server in servers:
        for _ in range(5):  # a fresh veth needs a moment (ARP, carrier)
            if _ask(pod, server) == (True, True):
                break
        else:
            raise AssertionError(f"the pod cannot reach {server}:53 before quarantine")


def test_dns_only_to_the_configured_server(tmp_path: Path, dns: dict[str, Any]) -> None:
    pod: NetnsPod = dns["pod"]
    _both_answer_before(pod, dns["dns"], dns["rogue"])
    pid = pod.start(["sleep", "60"])
    rec = respond(tmp_path, shell_alert(pid), params=f"{{dns_servers: [{dns['dns']}]}}")
    assert rec["outcome"] == "done", rec
    assert rec["render"]["allow"]["dns"] == [dns["dns"]]
    assert _ask(pod, dns["rogue"]) == (False, False), "port 53 of another host is open"
    resolved, _tcp = _ask(pod, dns["dns"])
    assert resolved, "the configured DNS server does not answer during quarantine"


def test_dns_servers_from_the_resolver_configuration(tmp_path: Path,
                                                     dns: dict[str, Any]) -> None:
    pod: NetnsPod = dns["pod"]
    _both_answer_before(pod, dns["dns"], dns["rogue"])
    conf = tmp_path / "resolv.conf"
    # a loopback resolver (systemd-resolved, a node-local cache on 127.x) means nothing to a
    # pod: it is left out
    conf.write_text(f"search svc.cluster.local\nnameserver 127.0.0.53\n"
                    f"nameserver {dns['dns']}\noptions ndots:5\n")
    pid = pod.start(["sleep", "60"])
    rec = respond(tmp_path, shell_alert(pid), params=f"{{resolv_conf: '{conf}'}}")
    assert rec["outcome"] == "done", rec
    assert rec["render"]["allow"]["dns"] == [dns["dns"]]
    assert _ask(pod, dns["rogue"]) == (False, False)
    assert _ask(pod, dns["dns"])[0]
