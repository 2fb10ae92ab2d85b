"""Descriptor state that does not depend on the loaded rules nor on the process still being
there (issue 14 point 3): fd.type, fd.name and a socket's tuple come from the fd table
(enforcer.state.fd_table), kept from the base state syscalls that are always attached.

The attack: a reverse shell dups a TCP connection onto stdin/stdout and exits at once, so
/proc/PID/fd is gone when userspace reads the record. Root; podman containers with unique
names; the host cases run the test's own python processes, marked in their command line.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from enforcer.agent import Agent
from enforcer.alert import Alert
from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_rules
from tests.system.agent_harness import LiveAgent
from tests.system.conftest import podman_run

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

DATA = Path(__file__).parents[1] / "data" / "falco-rules"
REDIRECT = "Redirect STDOUT/STDIN to Network Connection in Container"
MARK = "i14fd" + uuid.uuid4().hex[:8]
HOST_RULE = f"""
- rule: Socket dup'ed onto a standard stream by {MARK}
  desc: the upstream redirect rule's condition, on the host, for this test's processes
  condition: >
    evt.type in (dup, dup2, dup3) and evt.rawres in (0, 1, 2) and fd.type in (ipv4, ipv6)
    and proc.cmdline contains {MARK}
  output: "%fd.name %fd.type %fd.lport %fd.rport"
  priority: NOTICE
- rule: Pipe duplicated by {MARK}
  desc: a pipe's type, as a rule reads it on a dup or an fcntl(F_DUPFD*), for this test
  condition: >
    evt.type in (dup2, fcntl) and evt.rawres >= 0 and fd.type = pipe
    and proc.cmdline contains {MARK}
  output: "%fd.name %fd.type %fd.typechar %fd.num"
  priority: NOTICE
"""
SOCKET_RULE = f"Socket dup'ed onto a standard stream by {MARK}"
PIPE_RULE = f"Pipe duplicated by {MARK}"


@pytest.fixture
def upstream(ebpf_ready: None, podman_ready: None) -> Iterator[LiveAgent]:
    live = LiveAgent([str(DATA / "falco_rules.yaml")])
    yield live
    live.close()


def _in_container(name: str) -> object:
    return lambda a: a.event.get("container.name") == name


def test_redirect_fires_when_a_tcp_connection_is_dup_ed_onto_stdin(upstream: LiveAgent) -> None:
    """busybox `nc -l -e /bin/true`: accept (no peer address asked), dup2 onto 0 and 1,
    exec /bin/true, which exits at once. The accepted socket's type comes from the fd
    table (the accept and the listener's bind), not from /proc."""
    name = f"i14-redirect-{uuid.uuid4().hex[:6]}"
    script = ("nc -l -p 4444 -e /bin/true & "
              "for i in 1 2 3 4 5 6 7 8 9 10; do "
              "echo x | nc 127.0.0.1 4444 && break; sleep 1; done; wait")
    res = podman_run("sh", "-c", script, name=name)
    assert res.returncode == 0, res.stderr
    alert = upstream.wait(REDIRECT, lambda a: (a.event.get("container.name") == name
                                               and a.event.get("proc.name") == "nc"
                                               and a.event.get("evt.rawres") == 0))
    assert alert.event.get("fd.type") in ("ipv4", "ipv6")
    assert alert.event.get("fd.lport") == 4444
    assert alert.event.get("fd.l4proto") == "tcp"
    assert upstream.find(REDIRECT, lambda a: (a.event.get("container.name") == name
                                              and a.event.get("evt.rawres") == 1))


def test_redirect_is_silent_when_a_file_is_dup_ed(upstream: LiveAgent) -> None:
    """The near miss: a file dup'ed onto stdin and stdout, and onto a number a closed
    socket held just before (its close must take the entry with it)."""
    name = f"i14-file-{uuid.uuid4().hex[:6]}"
    script = ("exec 0</etc/hostname; exec 1>/dev/null; "
              "nc -l -p 4445 </dev/null >/dev/null 2>&1 & "
              "for i in 1 2 3 4 5 6 7 8 9 10; do "
              "nc 127.0.0.1 4445 </dev/null >/dev/null 2>&1 && break; sleep 1; done; "
              "exec 3</etc/hostname; exec 0<&3; exec 1>&3; wait; /bin/true")
    res = podman_run("sh", "-c", script, name=name)
    assert res.returncode == 0, res.stderr
    upstream.barrier()  # every event of the container has been judged
    # a later container's redirect is seen: the rule was live all along
    test_redirect_fires_when_a_tcp_connection_is_dup_ed_onto_stdin(upstream)
    assert not upstream.find(REDIRECT, _in_container(name))


# A process that connects to the test's listener, dups the socket onto stdout and exits
# at once; it prints nothing (stdout is the socket): the listener learns its port.
CLIENT = """
import os, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
os.dup2(s.fileno(), 1)
os._exit(0)
"""
# A server that accepts one connection, dups it onto stdin and exits at once.
SERVER = """
import os, socket, sys
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(1)
sys.stdout.write(f"{ls.getsockname()[1]}\\n")
sys.stdout.flush()
c, _ = ls.accept()
os.dup2(c.fileno(), 0)
os._exit(0)
"""


class _HeldAgent:
    """An agent whose probes are attached but whose event loop starts only on `run()`:
    the records of what the test does meanwhile wait in the ring buffer, and the test's
    processes are gone (reaped) before userspace reads a single one of them."""

    def __init__(self, rules: Path):
        self.alerts: list[Alert] = []
        engine = Engine(load_rules([str(rules)]))
        self.agent = Agent(engine, on_alert=self.alerts.append, rules=engine.rules,
                           stderr=sys.stderr)
        self.agent.open()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.agent.run, args=(self._stop,), daemon=True)

    def run(self) -> None:
        self._thread.start()

    def wait(self, pred: object, timeout: float = 30) -> Alert:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for a in list(self.alerts):
                if pred(a):  # type: ignore[operator]
                    return a
            time.sleep(0.05)
        raise AssertionError(f"no alert matched; drops: {self.agent.drops_total()}; "
                             f"seen: {[a.event.get('fd.name') for a in self.alerts]}")

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self.agent.close()


@pytest.fixture
def held(ebpf_ready: None, tmp_path: Path) -> Iterator[_HeldAgent]:
    rules = tmp_path / "dup.yaml"
    rules.write_text(HOST_RULE)
    agent = _HeldAgent(rules)
    yield agent
    agent.close()


def _mine(a: Alert) -> bool:
    return a.rule == SOCKET_RULE and MARK in (a.event.get("proc.cmdline") or "")


def test_connected_socket_tuple_after_the_process_exited(held: _HeldAgent) -> None:
    """The client's local port is the kernel's choice, known from the connect record
    (sock:inet_sock_set_state), not from /proc: the client is reaped before the agent
    reads anything."""
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        port = ls.getsockname()[1]
        child = subprocess.Popen([sys.executable, "-c", CLIENT, str(port), MARK])
        conn, (cip, cport) = ls.accept()
        conn.close()
        assert child.wait(30) == 0
    held.run()
    alert = held.wait(lambda a: _mine(a) and a.event.get("evt.rawres") == 1)
    assert alert.event.get("fd.name") == f"{cip}:{cport}->127.0.0.1:{port}"
    assert alert.event.get("fd.type") == "ipv4"
    assert (alert.event.get("fd.lport"), alert.event.get("fd.rport")) == (cport, port)
    assert alert.event.get("fd.sip") == "127.0.0.1"


def test_accepted_socket_tuple_after_the_process_exited(held: _HeldAgent) -> None:
    """The server's end: the peer from accept's address, the local end from its bind."""
    child = subprocess.Popen([sys.executable, "-c", SERVER, MARK], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    port = int(child.stdout.readline())
    with socket.create_connection(("127.0.0.1", port)) as c:
        cport = c.getsockname()[1]
        assert child.wait(30) == 0
    held.run()
    alert = held.wait(lambda a: _mine(a) and a.event.get("evt.rawres") == 0)
    assert alert.event.get("fd.name") == f"127.0.0.1:{cport}->127.0.0.1:{port}"
    assert (alert.event.get("fd.lport"), alert.event.get("fd.rport")) == (port, cport)
    assert alert.event.get("fd.l4proto") == "tcp"


def test_a_closed_socket_number_reused_by_a_file_is_a_file(held: _HeldAgent) -> None:
    """Close takes the entry: the number a socket held, reopened as a file (an open no
    rule asks for) and dup'ed onto stdout, is not a socket. A socket dup'ed after it is:
    the rule was live."""
    script = """
import os, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
n = s.fileno()
s.close()
f = os.open("/etc/hostname", os.O_RDONLY)
assert f == n, (f, n)
os.dup2(f, 1)
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
os.dup2(s.fileno(), 2)
os._exit(0)
"""
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(2)
        port = ls.getsockname()[1]
        _run_marked(script, str(port))
    held.run()
    held.wait(lambda a: _mine(a) and a.event.get("evt.rawres") == 2)
    assert not [a for a in held.alerts if _mine(a) and a.event.get("evt.rawres") == 1]


def _run_marked(script: str, *args: str) -> None:
    """Run `script` with these arguments and the test's marker, to its successful end."""
    child = subprocess.Popen([sys.executable, "-c", script, *args, MARK],
                             stderr=subprocess.DEVNULL)
    assert child.wait(30) == 0


def _pipe_alerts(held: _HeldAgent) -> dict[tuple[str, int], Alert]:
    return {(a.event.get("evt.type"), a.event.get("evt.rawres")): a for a in held.alerts
            if a.rule == PIPE_RULE and MARK in (a.event.get("proc.cmdline") or "")}


def test_pipes_are_pipes_after_the_process_exited(held: _HeldAgent) -> None:
    """pipe (through libc's pipe()) and pipe2 (os.pipe) make two descriptors of Falco's
    type `pipe` with an empty name, as libsinsp's pipe parser does; a dup2 of one onto
    stdout and an fcntl(F_DUPFD_CLOEXEC) of the other keep that type. The process is
    reaped before the agent reads a record, so /proc cannot answer. A socket dup'ed last
    shows the rules were live to the end."""
    script = """
import ctypes, fcntl, os, socket, sys
fds = (ctypes.c_int * 2)()
assert ctypes.CDLL(None, use_errno=True).pipe(fds) == 0
os.dup2(fds[1], 1)
r, w = os.pipe()
assert fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 40) == 40
os.close(fds[0])
f = os.open("/etc/hostname", os.O_RDONLY)
assert f == fds[0], (f, fds[0])
os.dup2(f, 2)
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
os.dup2(s.fileno(), 0)
os._exit(0)
"""
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        _run_marked(script, str(ls.getsockname()[1]))
    held.run()
    held.wait(lambda a: _mine(a) and a.event.get("evt.rawres") == 0)
    pipes = _pipe_alerts(held)
    assert set(pipes) == {("dup2", 1), ("fcntl", 40)}, sorted(pipes)
    for a in pipes.values():
        assert (a.event.get("fd.type"), a.event.get("fd.typechar")) == ("pipe", "p")
        assert a.event.get("fd.name") == ""
    # the closed pipe end, reopened as a file: not a pipe any more (no ("dup2", 2))


def test_non_blocking_tcp_connect_gets_its_local_end_in_the_kernel(held: _HeldAgent) -> None:
    """connect returns EINPROGRESS: the local end (the port the kernel picked) is read
    from the socket at connect's exit, not from /proc (the process is gone)."""
    script = """
import os, socket, sys
s = socket.socket()
s.setblocking(False)
assert s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 115
os.dup2(s.fileno(), 1)
os._exit(0)
"""
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        port = ls.getsockname()[1]
        _run_marked(script, str(port))
        conn, (_cip, cport) = ls.accept()
        conn.close()
    held.run()
    alert = held.wait(lambda a: _mine(a) and a.event.get("evt.rawres") == 1)
    assert alert.event.get("fd.name") == f"127.0.0.1:{cport}->127.0.0.1:{port}"
    assert (alert.event.get("fd.lport"), alert.event.get("fd.l4proto")) == (cport, "tcp")


def test_udp_connect_gets_its_local_end_in_the_kernel(held: _HeldAgent) -> None:
    """A UDP connect binds the socket to a port of the kernel's choice; no TCP state
    change tells it, the socket does."""
    script = """
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.send(b"x")
os.dup2(s.fileno(), 1)
os._exit(0)
"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as us:
        us.bind(("127.0.0.1", 0))
        port = us.getsockname()[1]
        _run_marked(script, str(port))
        us.settimeout(30)
        _data, (_cip, cport) = us.recvfrom(16)
    held.run()
    alert = held.wait(lambda a: _mine(a) and a.event.get("evt.rawres") == 1)
    assert alert.event.get("fd.name") == f"127.0.0.1:{cport}->127.0.0.1:{port}"
    assert (alert.event.get("fd.lport"), alert.event.get("fd.l4proto")) == (cport, "udp")


# Two listeners; each accept passes no address buffer (libc accept(fd, NULL, NULL)), and
# each accepted socket is dup'ed onto a standard stream (0, then 1).
SERVER_NULL_ADDR = """
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
ls = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    ls.append(s)
sys.stdout.write(" ".join(str(s.getsockname()[1]) for s in ls) + "\\n")
sys.stdout.flush()
sys.stdin.readline()  # both connections are established
for n, s in enumerate(ls):
    c = libc.accept(s.fileno(), None, None)
    assert c >= 0, ctypes.get_errno()
    os.dup2(c, n)
os._exit(0)
"""


def test_accept_without_an_address_and_one_peer_on_two_listeners(held: _HeldAgent) -> None:
    """accept(fd, NULL, NULL) still gets the remote end; and two connections from the
    same remote address and port (SO_REUSEADDR) to two listeners, both pending before
    the first accept, each get their own local end (they were once joined by the remote
    end alone, and the later one won)."""
    child = subprocess.Popen([sys.executable, "-c", SERVER_NULL_ADDR, MARK],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    ports = [int(p) for p in child.stdout.readline().split()]
    clients = [socket.socket(), socket.socket()]
    try:
        for c in clients:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        clients[0].bind(("127.0.0.1", 0))
        cport = clients[0].getsockname()[1]
        clients[1].bind(("127.0.0.1", cport))
        for c, port in zip(clients, ports, strict=True):
            c.connect(("127.0.0.1", port))
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait(30) == 0
    finally:
        for c in clients:
            c.close()
    held.run()
    for n, port in enumerate(ports):
        alert = held.wait(lambda a, n=n: _mine(a) and a.event.get("evt.rawres") == n)
        assert alert.event.get("fd.name") == f"127.0.0.1:{cport}->127.0.0.1:{port}", n
        assert (alert.event.get("fd.lport"), alert.event.get("fd.rport")) == (port, cport)


def test_a_child_closing_what_it_inherited_before_the_agent_reads_its_fork(
        held: _HeldAgent) -> None:
    """A shell's pipeline child closes the pipe ends (and a socket) it inherited at once,
    long before userspace has read its fork record and told the kernel which of the
    child's descriptors the table holds. Those closes must still cross, or the table
    keeps the child's copies: the numbers, reused by files dup'ed onto stdout and
    stderr, would be a pipe and a TCP socket (the upstream redirect rule's false alert).
    The held agent reads nothing until every process here has exited. The kernel copies
    the keys of numbers below 64 at the fork; above (70 here), the child's closes all
    cross until userspace has synced it."""
    # short: the record keeps the first 1 KiB of argv, and the marker comes last
    script = """
import os, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
r, w = os.pipe()
os.dup2(s.fileno(), 70)
if os.fork() == 0:
    for fd in (s.fileno(), r, w, 70):
        os.close(fd)
    for n in (1, 2, 0):
        os.dup2(os.open("/etc/hostname", os.O_RDONLY), n)
    while os.open("/etc/hostname", os.O_RDONLY) != 70:
        pass
    os.dup2(70, 1)
    os._exit(0)
os.wait()
os.dup2(s.fileno(), 0)
os.dup2(w, 1)
os._exit(0)
"""
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        _run_marked(script, str(ls.getsockname()[1]))
    held.run()
    parent = held.wait(lambda a: _mine(a) and a.event.get("evt.rawres") == 0)
    held.wait(lambda a: a.rule == PIPE_RULE and MARK in (a.event.get("proc.cmdline") or "")
              and a.event.get("proc.pid") == parent.event.get("proc.pid"))
    wrong = [(a.rule, a.event.get("evt.rawres")) for a in held.alerts
             if MARK in (a.event.get("proc.cmdline") or "")
             and a.event.get("proc.pid") != parent.event.get("proc.pid")]
    assert wrong == []
