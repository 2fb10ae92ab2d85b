"""A network-namespace "pod": a uniquely named netns joined to the host by a veth pair,
with a process inside it. Created and removed per test, as pyroute2's fixtures do."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from actions.process import read_stat


@dataclass
class NetnsPod:
    name: str
    host_if: str
    pod_if: str
    host_ip: str
    pod_ip: str
    process: subprocess.Popen | None = field(default=None, repr=False)

    @classmethod
    def create(cls, subnet: int = 213) -> NetnsPod:
        tag = uuid.uuid4().hex[:6]
        # the suite run's mark in the name: scripts/leftovers.py finds what a run left
        run = os.environ.get("SUITE_RUN_MARK", "")
        name = f"enf-{run}-{tag}" if run else f"enf-{tag}"
        pod = cls(name=name, host_if=f"enfh{tag}", pod_if=f"enfp{tag}",
                  host_ip=f"10.{subnet}.0.1", pod_ip=f"10.{subnet}.0.2")
        netns.create(pod.name)
        with IPRoute() as ipr:
            ipr.link("add", ifname=pod.host_if, kind="veth", peer=pod.pod_if)
            (peer,) = ipr.link_lookup(ifname=pod.pod_if)
            ipr.link("set", index=peer, net_ns_fd=pod.name)
            (host,) = ipr.link_lookup(ifname=pod.host_if)
            ipr.addr("add", index=host, address=pod.host_ip, prefixlen=24)
            ipr.link("set", index=host, state="up")
        with IPRoute(netns=pod.name) as ipr:
            (inner,) = ipr.link_lookup(ifname=pod.pod_if)
            ipr.addr("add", index=inner, address=pod.pod_ip, prefixlen=24)
            ipr.link("set", index=inner, state="up")
            (lo,) = ipr.link_lookup(ifname="lo")
            ipr.link("set", index=lo, state="up")
        return pod

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name] + argv, **kwargs)

    def start(self, argv: list[str]) -> int:
        """A long-running process inside the pod; returns its pid once it is inside."""
        self.process = subprocess.Popen(["ip", "netns", "exec", self.name] + argv)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            stat = read_stat(self.process.pid)
            with open(f"/proc/{self.process.pid}/cmdline", "rb") as handle:
                if stat and handle.read().split(b"\0")[0].decode() == argv[0]:
                    return self.process.pid
            time.sleep(0.01)
        raise AssertionError("the pod process did not start")

    def can_connect(self, host: str, port: int) -> bool:
        probe = ("import socket,sys\ns=socket.socket(); s.settimeout(1)\n"
                 f"try:\n s.connect(({host!r},{port})); print('ok')\n"
                 "except OSError as e: print('no', e)")
        done = self.run([sys.executable, "-c", probe], capture_output=True, text=True)
        return done.stdout.startswith("ok")

    def reaches(self, host: str, port: int, tries: int = 5) -> bool:
        """Reachable, allowing a fresh veth a moment to come up (ARP, carrier)."""
        for _ in range(tries):
            if self.can_connect(host, port):
                return True
            time.sleep(0.2)
        return False

    def remove(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        try:
            netns.remove(self.name)
        except OSError:
            pass
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=self.host_if):
                try:
                    ipr.link("del", index=index)
                except NetlinkError as exc:
                    # removing the netns destroys the veth pair, asynchronously
                    if exc.code != errno.ENODEV:
                        raise
