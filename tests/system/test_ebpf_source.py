"""The live source end to end: real probes, real processes, decoded events with their
process-table and container fields. Root; no rules engine involved."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from enforcer.sources.ebpf import EbpfSource, available_syscalls, plan
from enforcer.sources.probe import ProbeConfig
from enforcer.state.live_event import LiveEvent
from tests.system.agent_harness import only_tgid
from tests.system.conftest import podman_run

pytestmark = [pytest.mark.root, pytest.mark.ebpf]


class Watch:
    """A loaded source whose events are collected by a background thread."""

    def __init__(self) -> None:
        from enforcer.agent import build_state  # noqa: PLC0415

        cfg, self.attachment = plan(None, available_syscalls(),
                                    ProbeConfig(agent_tgid=os.getpid()))
        self.source = EbpfSource(cfg)
        self.source.open()
        self.tracker = build_state(lookup_timeout=5.0)  # see agent_harness: --rm containers
        self.events: list[LiveEvent] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for rec in self.source.poll(50):
                ev = self.tracker.apply(rec)
                if ev is not None:
                    # resolve what the tests look at while the process may still be alive
                    for f in ("proc.name", "container.id", "proc.pname", "fd.name"):
                        ev.get(f)
                    with self._lock:
                        self.events.append(ev)

    def wait_for(self, pred: Callable[[LiveEvent], bool], timeout: float = 20) -> LiveEvent:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            with self._lock:
                batch = self.events[seen:]
            for ev in batch:
                if pred(ev):
                    return ev
            seen += len(batch)
            time.sleep(0.05)
        raise AssertionError("expected event never arrived")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.source.close()


@pytest.fixture(scope="module")
def watch(ebpf_ready: None) -> Iterator[Watch]:
    w = Watch()
    yield w
    w.close()


def test_host_open_of_etc_shadow(watch: Watch) -> None:
    subprocess.run(["sh", "-c", "cat /etc/shadow > /dev/null; true"], check=True)
    ev = watch.wait_for(lambda e: e.get("evt.type") in ("open", "openat")
                        and e.get("fd.name") == "/etc/shadow" and e.get("proc.name") == "cat")
    assert ev.get("proc.pname") == "sh"
    assert ev.get("proc.cmdline") == "cat /etc/shadow"
    assert ev.get("proc.pcmdline") == "sh -c cat /etc/shadow > /dev/null; true"
    assert ev.get("user.name") == "root" and ev.get("user.uid") == 0
    assert ev.get("container.id") == "host"
    assert ev.get("evt.is_open_read") is True and ev.get("fd.typechar") == "f"
    assert ev.get("fd.num") >= 0 and ev.get("evt.dir") == "<"
    assert ev.get("fd.directory") == "/etc" and ev.get("fd.filename") == "shadow"
    assert ev.get("proc.exepath") == "/usr/bin/cat"
    # this tooling's own memory cgroup (/process_api/<hex>) is not a container
    assert ev.get("proc.aname[1]") == "sh"


def test_relative_open_resolves_against_cwd_and_failures_carry_errno(watch: Watch,
                                                                     tmp_path) -> None:
    subprocess.run(["sh", "-c", "cd /etc && cat ./hostname ../etc/nonexistent-x >/dev/null"],
                   check=False, capture_output=True)
    ev = watch.wait_for(lambda e: e.get("fd.name") == "/etc/hostname"
                        and e.get("proc.name") == "cat")
    assert ev.get("fd.nameraw") == "./hostname"
    ev = watch.wait_for(lambda e: e.get("fd.name") == "/etc/nonexistent-x")
    assert ev.get("evt.res") == "ENOENT" and ev.get("fd.num") == -1


def test_exec_symlink_and_connect_events(watch: Watch, tmp_path) -> None:
    link = tmp_path / "shadow-link"
    subprocess.run(["ln", "-s", "/etc/shadow", str(link)], check=True)
    ev = watch.wait_for(lambda e: e.get("evt.type") in ("symlink", "symlinkat")
                        and e.get("evt.arg.linkpath") == str(link))
    assert ev.get("evt.arg.target") == "/etc/shadow" and ev.get("evt.res") == "SUCCESS"
    assert ev.get("proc.name") == "ln"
    subprocess.run(["sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/9 2>/dev/null; true"],
                   check=False, capture_output=True)
    subprocess.run(["bash", "-c", "echo > /dev/tcp/127.0.0.1/9"], check=False,
                   capture_output=True)
    ev = watch.wait_for(lambda e: e.get("evt.type") == "connect"
                        and e.get("fd.sport") == 9 and e.get("proc.name") == "bash")
    assert ev.get("fd.sip") == "127.0.0.1" and ev.get("fd.typechar") == "4"
    assert ev.get("evt.res") == "ECONNREFUSED"


def test_exec_fields(watch: Watch) -> None:
    subprocess.run(["sh", "-c", "/bin/echo hello there > /dev/null; true"], check=True)
    ev = watch.wait_for(lambda e: e.get("evt.type") == "execve" and e.get("proc.name") == "echo")
    assert ev.get("proc.args") == "hello there"
    assert ev.get("proc.exe") == "/bin/echo"
    assert ev.get("proc.pname") == "sh"
    assert ev.get("evt.res") == "SUCCESS"


def test_container_identity_and_pod_labels(watch: Watch, podman_ready: None) -> None:
    name = f"enforcer-src-{os.getpid()}"
    res = podman_run("sh", "-c", "cat /etc/shadow >/dev/null; sleep 1", name=name,
                     labels={"io.kubernetes.pod.name": "web-1",
                             "io.kubernetes.pod.namespace": "shop",
                             "io.kubernetes.pod.uid": "0000-1111"})
    assert res.returncode == 0, res.stderr
    ev = watch.wait_for(lambda e: e.get("fd.name") == "/etc/shadow"
                        and e.get("container.id") != "host")
    inspect = subprocess.run(["podman", "ps", "-a", "--no-trunc", "-q"], capture_output=True,
                             text=True, check=False)
    assert len(ev.get("container.id")) == 12
    assert ev.get("proc.name") == "cat"
    assert ev.get("container.name") == name, "is the podman API socket served?"
    assert ev.get("container.image.repository") == "localhost/enforcer-busybox"
    assert ev.get("container.image.tag") == "test"
    assert ev.get("k8s.pod.name") == "web-1" and ev.get("k8s.ns.name") == "shop"
    assert ev.get("k8s.pod.uid") == "0000-1111"
    assert ev.get("container.privileged") is False
    del inspect


# Opens in a tight loop once told to go; then it waits to be told to exit, so that nothing
# of its own (its exit) reaches the ring before the counts are read.
FLOODER = """
import os, sys
sys.stdin.readline()
for _ in range(int(sys.argv[1])):
    os.close(os.open("/etc/hostname", os.O_RDONLY))
print("done", flush=True)
sys.stdin.readline()
"""


@contextmanager
def flooded(n: int, ringbuf_pages: int) -> Iterator[tuple[EbpfSource, int, int]]:
    """A source whose ring (of `ringbuf_pages`) nobody reads while a process of the test
    opens a file `n` times: (the source, the flooder's pid, the drops counted once the
    flooder is done)."""
    flooder = subprocess.Popen([sys.executable, "-c", FLOODER, str(n)], text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert flooder.stdin is not None and flooder.stdout is not None
    cfg, _ = plan(frozenset({"openat"}), available_syscalls(),
                  ProbeConfig(ringbuf_pages=ringbuf_pages, extra_defines=only_tgid(flooder.pid)))
    source = EbpfSource(cfg)
    source.open()
    try:
        assert source.drops() == 0
        flooder.stdin.write("go\n")
        flooder.stdin.flush()
        assert flooder.stdout.readline() == "done\n"
        yield source, flooder.pid, source.drops()
    finally:
        flooder.kill()
        flooder.wait()
        source.close()


def test_drain_hands_over_everything_left_however_many(ebpf_ready: None) -> None:
    """What a stopping agent (or a hot reload, from the old probes) drains is every record
    left in the ring, not one batch of it: an agent behind by more than a batch when it was
    told to stop once decided none of its last matches."""
    n = 3000  # three batches; the 1 MiB ring holds them all
    with flooded(n, 256) as (source, pid, dropped):
        assert dropped == 0
        assert len([r for r in source.drain() if r["proc.pid"] == pid]) == n


def test_drop_counter_counts_every_record_the_ring_could_not_take(ebpf_ready: None) -> None:
    """A ring of 64 KiB that nobody reads while one process opens a file N times: it
    overruns for sure, and every open is either read afterwards or counted as dropped."""
    n = 5000
    with flooded(n, 16) as (source, pid, dropped):
        read = [r for r in source.drain() if r["proc.pid"] == pid]
        assert all(r["evt.type"] == "openat" for r in read)
        assert 0 < len(read) < n, "the ring did not overrun (or took nothing)"
        assert dropped == n - len(read)


def test_reader_sleeps_when_idle_and_loses_nothing_while_awake(watch: Watch) -> None:
    """The adaptive reader: idle, it sleeps and the first record wakes it; during a run of
    activity it drains on its timer and records, which then do not wake it, all arrive."""
    # The count is read before the reader is seen asleep: a host record that wakes it
    # between the two would otherwise be counted in `woken`, and the cat's record would then
    # arrive on the timer (this failed CI once on a busy host). Asleep is `reader_sleeping`,
    # not `not reader_polling`: the reader stops polling, then drains once more, and a
    # record taken by that drain wakes nothing (this failed CI a second time).
    deadline = time.monotonic() + 15
    while True:
        woken = watch.source.wakeups
        asleep = watch.source.reader_sleeping
        if asleep or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert asleep, "the reader never went to sleep on an idle host"
    subprocess.run(["cat", "/etc/shadow"], stdout=subprocess.DEVNULL, check=True)
    watch.wait_for(lambda e: e.get("fd.name") == "/etc/shadow" and e.get("proc.name") == "cat")
    assert watch.source.wakeups > woken
    # a run of 300 opens, 1 ms apart: the reader stays awake and must see every one
    n = 300
    script = ("import time\n"
              f"for _ in range({n}):\n"
              "    open('/etc/shadow').close(); time.sleep(0.001)\n")
    proc = subprocess.Popen(["python3", "-c", script])
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with watch._lock:
            got = sum(1 for e in watch.events if e.get("proc.pid") == proc.pid
                      and e.get("fd.name") == "/etc/shadow")
        if got >= n:
            break
        time.sleep(0.05)
    assert got == n
