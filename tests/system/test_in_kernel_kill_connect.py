"""The in-kernel kill on connects, end to end on the live agent: `kill: {in_kernel: true}` on
a rule `evt.type = connect and evt.dir = < and fd.sport = P ... and proc.name = python3`
makes the BPF program SIGKILL a python3 that connects to a local TCP listener on port P
(IPv4, IPv6, and IPv4-mapped IPv6) at the exit of connect: the process never prints after
connect returns and the listener never receives a byte. The same python3 connecting to
another port, a process with another name connecting to P, and a connect to a forbidden
port that is refused (the rule wants `evt.rawres >= 0 or evt.res = EINPROGRESS`, as
upstream's outbound macro does) are untouched.

sendto and sendmsg too: a rule on `evt.type in (sendto, sendmsg) and fd.sport = P` kills
python3 at the entry of its first datagram to P; that datagram leaves (the syscall runs to
its end), the next never does.

As in test_in_kernel_kill.py, the rule is narrowed to children of this test's launcher
(a copy of python with its own name), so that the agent acts only on this test's
processes on a shared machine."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.test_in_kernel_kill import Launcher, audit_records, run_kill_agent, stop

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

TRIALS = 20
V6_TRIALS = 10
MAPPED_TRIALS = 5
CONTROLS = 5
VICTIM = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
try:
    s.connect((host, port))
except OSError as exc:
    print("failed", exc.errno, flush=True)
    sys.exit(3)
print("connected", flush=True)
s.sendall(b"sent after connect returned")
s.close()
"""
CONNECTED = len("connected\n")


class Listener:
    """A TCP listener on 127.0.0.1 and ::1 (same port) that records what each
    connection sends."""

    def __init__(self) -> None:
        self.v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.v4.bind(("127.0.0.1", 0))
        self.port = self.v4.getsockname()[1]
        self.v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.v6.bind(("::1", self.port))
        self.lock = threading.Lock()
        self.received: list[bytes] = []
        self.threads = []
        for sock in (self.v4, self.v6):
            sock.listen(64)
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                try:
                    while chunk := conn.recv(4096):
                        data += chunk
                except OSError:
                    pass
            with self.lock:
                self.received.append(data)

    def take(self, count: int, timeout: float = 30) -> list[bytes]:
        """The payloads of the next `count` connections (in order of closing)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.received) >= count:
                    out, self.received = self.received[:count], self.received[count:]
                    return out
            assert time.monotonic() < deadline, "the listener did not see the connections"
            time.sleep(0.05)

    def close(self) -> None:
        for sock in (self.v4, self.v6):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def free_port() -> int:
    """A port nothing listens on (refused connects)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    lau = Launcher(tmp_path)
    yield lau
    lau.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lis = Listener()
    yield lis
    lis.close()


def start_agent(tmp: Path, launcher: Launcher, cmd: list[str], env: dict[str, str],
                ports: tuple[int, ...], rules_text: str = "",
                rule_name: str = "Connect to a forbidden port"
                ) -> tuple[subprocess.Popen[bytes], Path, Path]:
    rules = tmp / "connect_rules.yaml"
    rules.write_text(rules_text or (
        "- rule: Connect to a forbidden port\n"
        "  desc: python3 connects to a port it must not reach\n"
        "  condition: >\n"
        f"    evt.type = connect and evt.dir = < and fd.sport in ({', '.join(map(str, ports))})\n"
        "    and (fd.typechar = 4 or fd.typechar = 6)\n"
        "    and (evt.rawres >= 0 or evt.res = EINPROGRESS)\n"
        f"    and proc.name = python3 and proc.pname = {launcher.name}\n"
        "  output: forbidden connect (connection=%fd.name proc=%proc.name)\n"
        "  priority: WARNING\n"))
    return run_kill_agent(tmp, cmd, env, rules, rule_name)


def test_connect_to_the_forbidden_port_is_killed_in_the_kernel(
        need_root: None, ebpf_ready: None, tmp_path: Path, launcher: Launcher,
        listener: Listener, enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    refused = free_port()
    other = Listener()
    other_name = tmp_path / "notpython3"
    shutil.copy(Path(sys.executable).resolve(), other_name)
    agent, audit, err = start_agent(tmp_path, launcher, enforcer_cmd, cli_env,
                                    (listener.port, refused))
    port = str(listener.port)
    try:
        assert "in-kernel kill armed for 1 rules" in err.read_text()
        for host, trials in (("127.0.0.1", TRIALS), ("::1", V6_TRIALS),
                             ("::ffff:127.0.0.1", MAPPED_TRIALS)):
            results = [launcher.run("python3", "-c", VICTIM, host, port)
                       for _ in range(trials)]
            assert results == [(-signal.SIGKILL, 0)] * trials, host
            # the connect completed (the kill came at its exit), and not one byte followed
            assert listener.take(trials) == [b""] * trials, host
        # the same python3 to another port, another program to the forbidden port
        for _ in range(CONTROLS):
            assert launcher.run("python3", "-c", VICTIM, "127.0.0.1",
                                str(other.port)) == (0, CONNECTED)
            assert launcher.run(str(other_name), "-c", VICTIM, "127.0.0.1",
                                port) == (0, CONNECTED)
            assert launcher.run(str(other_name), "-c", VICTIM, "::1", port) == (0, CONNECTED)
        assert listener.take(2 * CONTROLS) == [b"sent after connect returned"] * 2 * CONTROLS
        assert other.take(CONTROLS) == [b"sent after connect returned"] * CONTROLS
        # a refused connect to a forbidden port: the rule wants a successful (or
        # in-progress) connect, so the kernel waits for the result and leaves it alone
        failed = len(f"failed {111}\n")
        for _ in range(CONTROLS):
            assert launcher.run("python3", "-c", VICTIM, "127.0.0.1",
                                str(refused)) == (3, failed)
    finally:
        stop(agent)
        other.close()
    kills = audit_records(audit, "killed-in-kernel")
    assert len(kills) == TRIALS + V6_TRIALS + MAPPED_TRIALS
    assert {(k["rule"], k["detail"]["address"]) for k in kills} == {
        ("Connect to a forbidden port", f"127.0.0.1:{port}"),
        ("Connect to a forbidden port", f"[::1]:{port}")}
    # at the exit of a connect that succeeded: the rule reads the result
    assert all(k["detail"]["ret"] == 0 and "at exit of the connect" in k["message"]
               for k in kills)


SENDER = """
import socket, sys
host, port, call = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
if call == "sendto":
    s.sendto(b"first", (host, port))
else:
    s.sendmsg([b"first"], [], 0, (host, port))
print("sent", flush=True)
s.sendto(b"second", (host, port))
"""


class UdpListener:
    """UDP sockets on 127.0.0.1 and ::1 (same port) that record every datagram."""

    def __init__(self) -> None:
        self.v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.v4.bind(("127.0.0.1", 0))
        self.port = self.v4.getsockname()[1]
        self.v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.v6.bind(("::1", self.port))
        self.lock = threading.Lock()
        self.received: list[bytes] = []
        for sock in (self.v4, self.v6):
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(4096)
            except OSError:
                return
            with self.lock:
                self.received.append(data)

    take = Listener.take
    close = Listener.close


def test_sendto_and_sendmsg_to_the_forbidden_port_are_killed_in_the_kernel(
        need_root: None, ebpf_ready: None, tmp_path: Path, launcher: Launcher,
        enforcer_cmd: list[str], cli_env: dict[str, str]) -> None:
    udp, other = UdpListener(), UdpListener()
    other_name = tmp_path / "notpython3"
    shutil.copy(Path(sys.executable).resolve(), other_name)
    agent, audit, err = start_agent(tmp_path, launcher, enforcer_cmd, cli_env, (), rules_text=(
        "- rule: Send to a forbidden port\n"
        "  desc: python3 sends a datagram to a port it must not reach\n"
        f"  condition: evt.type in (sendto, sendmsg) and fd.sport = {udp.port}\n"
        f"    and proc.name = python3 and proc.pname = {launcher.name}\n"
        "  output: forbidden datagram (connection=%fd.name proc=%proc.name)\n"
        "  priority: WARNING\n"), rule_name="Send to a forbidden port")
    assert "in-kernel kill armed for 1 rules" in err.read_text()
    port = str(udp.port)
    trials = 0
    try:
        for host, call in (("127.0.0.1", "sendto"), ("::1", "sendto"),
                           ("127.0.0.1", "sendmsg"), ("::1", "sendmsg")):
            results = [launcher.run("python3", "-c", SENDER, host, port, call)
                       for _ in range(CONTROLS)]
            assert results == [(-signal.SIGKILL, 0)] * CONTROLS, (host, call)
            # killed at the entry of the first send: that datagram still leaves (the
            # syscall runs to its end), but the process never runs again
            assert udp.take(CONTROLS) == [b"first"] * CONTROLS, (host, call)
            trials += CONTROLS
        for _ in range(CONTROLS):
            assert launcher.run("python3", "-c", SENDER, "127.0.0.1", str(other.port),
                                "sendto") == (0, len("sent\n"))
            assert other.take(2) == [b"first", b"second"]
            assert launcher.run(str(other_name), "-c", SENDER, "::1", port,
                                "sendmsg") == (0, len("sent\n"))
            assert udp.take(2) == [b"first", b"second"]
    finally:
        stop(agent)
        udp.close()
        other.close()
    kills = audit_records(audit, "killed-in-kernel")
    assert len(kills) == trials
    assert {(k["detail"]["syscall"], k["detail"]["address"]) for k in kills} == {
        (call, addr) for call in ("sendto", "sendmsg")
        for addr in (f"127.0.0.1:{port}", f"[::1]:{port}")}
    assert all("at entry" in k["message"] for k in kills)
