"""The per-process detection masks never drop an event a rule matches (issue 17).

A differential property test: generated processes (forked and exec'd on the host, in a
container whose metadata is in and in one whose metadata is not; random names, images,
arguments, users) make generated events (every watched syscall but exec, random
arguments, paths, addresses and results), from threads whose comm, uid and cgroup are
the process's or not (a rename or setuid the table has not seen yet, another cgroup). The
masks are kept by DetectionMasks from the records that cross, exactly as the agent keeps
them; each event is judged twice: by `kernel_drops`, the model of quiet_drop() in
bpf/events.c, against the entry the masks wrote, and by the real rules engine on the
live event the record becomes. Whenever the engine matches, the model must have let the
record through. Rule sets: the three upstream files, and random ones."""

from __future__ import annotations

import itertools
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enforcer.kernel.detection_masks import BIT, DetectionMasks, kernel_drops
from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_rules, load_text
from enforcer.sources import syscalls as sc
from enforcer.sources.decode import decode, pack
from enforcer.state.containers import ContainerInfo, ContainerRegistry
from enforcer.state.live_event import StateContext
from enforcer.state.process_table import ProcessTable
from enforcer.state.tracker import Tracker
from tests.unit.state.test_process_table import _proc

DATA = Path(__file__).resolve().parents[2] / "data" / "falco-rules"
STABLE, INCUBATING, SANDBOX = (DATA / f for f in (
    "falco_rules.yaml", "falco-incubating_rules.yaml", "falco-sandbox_rules.yaml"))
KNOWN_CID = "a" * 64  # metadata in
BARE_CID = "b" * 64  # metadata not in
# parent pid -> the cgroup id its records carry
PARENTS = {100: 1, 200: 7, 300: 9}
PARENT_COMMS = {100: "bash", 200: "sh", 300: "sh"}

COMMS = ["sh", "bash", "nc", "ncat", "python3", "curl", "wget", "sshd", "su", "sudo", "cat",
         "vi", "runc", "dockerd", "apt", "dpkg", "node", "java", "mysqld", "nginx", "cron",
         "tcpdump", "nmap", "kubectl", "busybox", "exe", "rm", "shred", "mount", "insmod",
         "gdb", "strace", "socat", "openssl", "grep", "find", "chmod", "ssh", "scp", "git"]
EXES = ["/usr/bin/{}", "/bin/{}", "/tmp/{}", "/dev/shm/{}", "/usr/local/bin/{}", "{}",
        "/memfd:{}"]
ARGS = ["", "-c id", "-e /bin/sh 1.2.3.4 4444", "/etc/shadow", "-la", "--version",
        "-i", "base64 -d", "-n 10.0.0.1 22", "clone", "-r /"]
PATHS = ["/etc/shadow", "/etc/passwd", "/etc/pam.d/sshd", "/etc/sudoers", "/root/.ssh/id_rsa",
         "/tmp/x", "/dev/shm/x", "/bin/ls", "/usr/bin/x", "/proc/self/mem",
         "/var/run/docker.sock", "/etc/ld.so.preload", "/boot/x", "/sys/fs/cgroup/release_agent",
         "/home/u/.bash_history", "x", "../etc/shadow", "/etc/cron.d/job", "/dev/mem",
         "/usr/lib/x.so", "/etc/kubernetes/admin.conf", "/run/secrets/token", "/tmp"]


def _addr(ip: str, port: int) -> bytes:
    return struct.pack("<H", 2) + struct.pack(">H", port) + socket.inet_aton(ip)


ADDRS = [_addr("1.2.3.4", 4444), _addr("127.0.0.1", 53), _addr("10.0.0.1", 22),
         _addr("8.8.8.8", 443), b"\x01\x00/run/x.sock\x00", b""]
SYSCALLS = [s.name for s in sc.SYSCALLS if s.family != "exec"]

processes = st.tuples(
    st.sampled_from(sorted(PARENTS)), st.sampled_from(COMMS), st.sampled_from(EXES),
    st.sampled_from(ARGS), st.sampled_from([0, 1000, 33]))


def _events(names: list[str]) -> st.SearchStrategy[tuple]:
    return st.tuples(
        st.sampled_from(names), st.sampled_from(PATHS), st.sampled_from(PATHS),
        st.sampled_from(ADDRS), st.lists(st.integers(-1, 0o4001102), min_size=6, max_size=6),
        st.sampled_from([0, 3, -1, -2, -13, -111, -115]),
        # the thread: as the masks saw it, renamed, another user, another cgroup
        st.sampled_from(["same", "same", "same", "comm", "uid", "cgroup"]))


events = _events(SYSCALLS)


def _fake_proc(root: Path) -> None:
    root.mkdir()
    (root / "stat").write_text("cpu 0\nbtime 1700000000\n")
    _proc(root, 1, "init", 0, ["/sbin/init"])
    _proc(root, 100, "bash", 1, ["bash"], cwd="/root", tty=34816)
    _proc(root, 200, "sh", 1, ["sh"], cgroup=f"0::/libpod_parent/libpod-{KNOWN_CID}")
    _proc(root, 300, "sh", 1, ["sh"], cgroup=f"0::/libpod_parent/libpod-{BARE_CID}")


class _Kernel:
    """The kernel's quiet map (MaskMaps) and its notes of each process's exec and fork."""

    def __init__(self) -> None:
        self.quiet: dict[int, tuple] = {}
        self.born: dict[int, int] = {}

    def put_quiet(self, tgid, quiet, born, uid, gid, cgroup, comm) -> None:
        self.quiet[tgid] = (quiet, born, uid, gid, cgroup, comm)

    def delete_quiet(self, tgid) -> None:
        self.quiet.pop(tgid, None)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("masks") / "proc"
    _fake_proc(root)
    table = ProcessTable(str(root))
    table.seed()
    registry = ContainerRegistry(None)
    registry._store(KNOWN_CID, ContainerInfo(  # noqa: SLF001 - metadata as a lookup stores it
        id=KNOWN_CID[:12], full_id=KNOWN_CID, name="web", image="docker.io/library/nginx:1",
        image_repository="docker.io/library/nginx", image_tag="1", privileged=False,
        labels={"io.kubernetes.pod.namespace": "prod", "io.kubernetes.pod.name": "web-1"},
        runtime="podman"))
    tracker = Tracker(StateContext(table=table, containers=registry, proc_root=str(root),
                                   hostname="h"))
    return tracker, itertools.count(1000), itertools.count(10_000_000, 1000)


def _check(world, engine: Engine, procs: list[tuple], evs: list[tuple]) -> int:
    """Run the processes and events; the number of records the model dropped."""
    tracker, pids, clock = world
    kernel = _Kernel()
    masks = DetectionMasks(list(engine.rules), kernel)
    dropped = 0

    def cross(raw: bytes):
        rec = decode(raw)
        event = tracker.apply(rec)
        masks.after(rec, tracker.ctx)
        return event

    for (parent, comm, exe, args, uid), chunk in zip(procs, _chunks(evs, len(procs)),
                                                     strict=True):
        pid, cgroup = next(pids), PARENTS[parent]
        ts = next(clock)
        kernel.born[pid] = ts
        cross(pack(code=sc.EV_FORK, tgid=parent, ints=(pid, parent),
                   comm=PARENT_COMMS[parent], ts=ts, cgroup_id=cgroup))
        ts = next(clock)
        kernel.born[pid] = ts
        path = exe.format(comm)
        argv = (path, *args.split()) if args else (path,)
        cross(pack(code=sc.CODES["execve"], tgid=pid, comm=comm, uid=uid, gid=uid,
                   path1=path, argv=argv, ts=ts, cgroup_id=cgroup))
        for name, p1, p2, addr, ints, ret, thread in chunk:
            if name == "chdir":  # a cwd the rules name, often
                p1 = "/tmp" if len(p1) % 2 else "/root"
            t_comm = comm if thread != "comm" else "renamed"
            t_uid = uid if thread != "uid" else 4242
            t_cgroup = cgroup if thread != "cgroup" else 77
            raw = pack(code=sc.CODES[name], tgid=pid, comm=t_comm, uid=t_uid, gid=t_uid,
                       ret=ret, ints=tuple(ints), path1=p1, path2=p2, saddr=addr,
                       ts=next(clock), cgroup_id=t_cgroup)
            entry = kernel.quiet.get(pid)
            drops = entry is not None and kernel_drops(
                _entry(entry), name, t_comm, t_uid, t_uid, t_cgroup, kernel.born.get(pid, 0))
            if not drops:
                cross(raw)
                continue
            dropped += 1
            event = tracker.apply(decode(raw))  # what the engine would have said
            assert event is not None
            matched = [r.name for r in engine.matching_rules(event)]
            assert not matched, (
                f"dropped {name} of {comm} ({path} {args}, uid {uid}, parent {parent}) that "
                f"{matched} match; mask {entry[0]:#x} bit {BIT[name]:#x}")
    return dropped


def _entry(raw: tuple):
    from enforcer.kernel.detection_masks import Entry  # noqa: PLC0415

    quiet, born, uid, gid, cgroup, comm = raw
    return Entry(quiet, born, uid, gid, cgroup, comm.decode())


def _chunks(evs: list[tuple], n: int) -> list[list[tuple]]:
    return [evs[i::n] for i in range(n)]


@pytest.fixture(scope="module", params=["stable", "stable+incubating", "all three"])
def upstream(request: pytest.FixtureRequest) -> Engine:
    files = {"stable": [STABLE], "stable+incubating": [STABLE, INCUBATING],
             "all three": [STABLE, INCUBATING, SANDBOX]}[request.param]
    return Engine(load_rules([str(f) for f in files]))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(procs=st.lists(processes, min_size=1, max_size=4),
       evs=st.lists(events, min_size=4, max_size=40))
def test_the_masks_never_drop_an_event_an_upstream_rule_matches(
        world, upstream: Engine, procs: list[tuple], evs: list[tuple]) -> None:
    _check(world, upstream, procs, evs)


ATOMS = ["proc.name = {c}", "proc.name in ({c}, sh)", "proc.exe startswith /tmp",
         "proc.cmdline contains '-e'", "user.uid = 0", "user.uid != 0",
         "container.id != host", "container.id = host", "container.name = web",
         "container.image.repository endswith nginx", "k8s.ns.name = prod",
         "proc.pname = bash", "proc.aname[2] = init", "proc.cwd = /root/",
         "proc.cwd startswith /tmp",
         "fd.name startswith /etc", "fd.sport = 4444", "fd.rport = 4444",
         "evt.res != SUCCESS", "proc.args contains shadow", "proc.tty != 0",
         "k8s.pod.label[app] = x", "user.name = root"]
TYPES = ["open,openat", "connect", "sendto,sendmsg", "dup2,dup3", "ptrace", "unlink,unlinkat",
         "socket", "init_module,finit_module", "kill", "mount", "chmod,fchmodat", "close",
         "execve"]
atoms = st.tuples(st.sampled_from(ATOMS), st.sampled_from(COMMS)).map(
    lambda t: t[0].format(c=t[1]))
conditions = st.recursive(
    atoms, lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda ab: f"({ab[0]} and {ab[1]})"),
        st.tuples(inner, inner).map(lambda ab: f"({ab[0]} or {ab[1]})"),
        inner.map(lambda a: f"not ({a})")), max_leaves=5)
rules = st.lists(st.tuples(st.sampled_from(TYPES), conditions, st.booleans()).map(
    lambda t: (f"evt.type in ({t[0]}) and {t[1]}" if t[2] else t[1])),
    min_size=1, max_size=4)
# the syscalls those rules name, and chdir (the cwd changes without an exec)
typed_events = _events(sorted({n for t in TYPES for n in t.split(",")} - {"execve"}
                              | {"chdir"}))


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(conds=rules, procs=st.lists(processes, min_size=1, max_size=3),
       evs=st.lists(typed_events, min_size=4, max_size=30))
def test_the_masks_never_drop_an_event_a_random_rule_matches(
        world, conds: list[str], procs: list[tuple], evs: list[tuple]) -> None:
    text = "".join(f"- rule: r{i}\n  desc: d\n  condition: {c}\n  output: o\n"
                   f"  priority: WARNING\n" for i, c in enumerate(conds))
    _check(world, Engine(load_text(text)), procs, evs)


def test_the_masks_do_drop_what_no_rule_can_match(world) -> None:
    """The property above must be able to fail: with the stable rules, a host shell's
    connects, sends and module loads are dropped (those rules are container-only), its
    opens and execs are not."""
    engine = Engine(load_rules([str(STABLE)]))
    tracker, pids, clock = world
    kernel = _Kernel()
    masks = DetectionMasks(list(engine.rules), kernel)
    pid, ts = next(pids), next(clock)
    for raw in (pack(code=sc.EV_FORK, tgid=100, ints=(pid, 100), comm="bash", ts=ts,
                     cgroup_id=1),
                pack(code=sc.CODES["execve"], tgid=pid, comm="bash", path1="/usr/bin/bash",
                     argv=("bash",), ts=ts + 1, cgroup_id=1)):
        rec = decode(raw)
        tracker.apply(rec)
        masks.after(rec, tracker.ctx)
    entry = _entry(kernel.quiet[pid])
    for name in ("connect", "sendto", "init_module", "dup2"):
        assert kernel_drops(entry, name, "bash", 0, 0, 1, ts + 1), name
    for name in ("openat", "execve", "chdir", "setuid"):
        assert not kernel_drops(entry, name, "bash", 0, 0, 1, ts + 1), name
    # the same process renamed, under another user, in another cgroup, or exec'd again
    assert not kernel_drops(entry, "connect", "exe", 0, 0, 1, ts + 1)
    assert not kernel_drops(entry, "connect", "bash", 1000, 1000, 1, ts + 1)
    assert not kernel_drops(entry, "connect", "bash", 0, 0, 2, ts + 1)
    assert not kernel_drops(entry, "connect", "bash", 0, 0, 1, ts + 2)
