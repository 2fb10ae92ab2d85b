"""The in-kernel open filter never drops an open that a loaded rule matches.

A property test: random rule sets over the fields the filter understands (and some it does
not), random raw paths (absolute and relative, with `.`, `..`, `//`) and random open flags.
Each open is judged twice: by `kernel_passes`, the model of open_wanted() in bpf/events.c,
loaded with the filter derived from the rules, and by the real rules engine on the live
event that the decoded record becomes (path resolved against the process's cwd). Whenever
the engine matches, the model must have let the open through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from enforcer.kernel.open_filter import kernel_passes, open_filter_for
from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_text
from enforcer.sources import syscalls as sc
from enforcer.sources.decode import decode, pack
from enforcer.state.containers import ContainerRegistry
from enforcer.state.live_event import StateContext
from enforcer.state.process_table import ProcessTable
from enforcer.state.tracker import Tracker

NAMES = ["etc", "e", "shadow", "tmp", "ssh", ".ssh", "cron", "a", "etcx", "release_agent"]
DIRS = ["/", "/etc", "/etc/", "/e", "/tmp", "/etc/ssh", "/root/.ssh", "/a"]
FLAGS = {"O_RDONLY": os.O_RDONLY, "O_WRONLY": os.O_WRONLY, "O_RDWR": os.O_RDWR}
OPEN_TYPES = ["(open,openat,openat2)", "(openat)", "(execve)", "(open,openat,openat2,creat)"]
CWDS = ["/", "/etc", "/tmp/a", "/root/.ssh"]

components = st.sampled_from(NAMES + [".", "..", ""])
abs_values = st.lists(st.sampled_from(NAMES), min_size=0, max_size=3).map(
    lambda parts: "/" + "/".join(parts))


def _quoted(text: str) -> str:
    return "'" + text + "'"


def _path_atoms() -> st.SearchStrategy[str]:
    value = abs_values.map(_quoted)
    values = st.lists(abs_values, min_size=1, max_size=3).map(
        lambda vs: "(" + ", ".join(_quoted(v) for v in vs) + ")")
    name = st.sampled_from(NAMES)
    return st.one_of(
        value.map(lambda v: f"fd.name = {v}"),
        values.map(lambda v: f"fd.name in {v}"),
        value.map(lambda v: f"fd.name startswith {v}"),
        values.map(lambda v: f"fd.name pmatch {v}"),
        abs_values.map(lambda v: f"fd.name glob '{v}*'"),
        st.sampled_from(DIRS).map(lambda d: f"fd.directory = '{d}'"),
        st.lists(st.sampled_from(DIRS), min_size=1, max_size=3).map(
            lambda ds: "fd.directory in (" + ", ".join(_quoted(d) for d in ds) + ")"),
        name.map(lambda n: f"fd.filename = {n}"),
        name.map(lambda n: f"fd.name endswith {n}"),
        name.map(lambda n: f"fd.name endswith /{n}"),
        name.map(lambda n: f"fd.name contains {n}"),  # not a path constraint: any path
        st.just("fd.nameraw contains '../'"),
    )


path_atoms = _path_atoms()
class_atoms = st.sampled_from(["evt.is_open_read=true", "evt.is_open_write=true",
                               "evt.arg.flags contains O_TRUNC",
                               "evt.arg.flags contains O_CREAT",
                               "evt.arg.flags contains O_RDWR",
                               "evt.arg.flags contains O_WRONLY",
                               "evt.arg.flags contains O_RDONLY"])
other_atoms = st.one_of(
    st.sampled_from(OPEN_TYPES).map(lambda t: f"evt.type in {t}"),
    st.sampled_from(["fd.typechar='f'", "proc.name=cat", "proc.name=sh"]))


def _atoms() -> st.SearchStrategy[str]:
    return st.one_of(path_atoms, class_atoms, other_atoms)


conditions = st.recursive(
    _atoms(),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda ab: f"({ab[0]} and {ab[1]})"),
        st.tuples(inner, inner).map(lambda ab: f"({ab[0]} or {ab[1]})"),
        inner.map(lambda a: f"not ({a})"),
    ),
    max_leaves=6,
)


def _open_rule(cond: str) -> str:
    # most rules about opens say so, as upstream's open_read/open_write macros do
    return f"evt.type in (open,openat,openat2) and {cond}"


# the shape of most upstream rules: an open of some class, on some paths (by someone)
shaped = st.tuples(class_atoms, st.one_of(path_atoms, st.tuples(path_atoms, path_atoms).map(
    lambda ab: f"({ab[0]} or {ab[1]})")), st.sampled_from(["", " and proc.name=cat"])).map(
    lambda t: _open_rule(f"{t[0]} and {t[1]}{t[2]}"))
rule_sets = st.lists(st.one_of(shaped, shaped, shaped, conditions.map(_open_rule),
                               conditions), min_size=1, max_size=4)
raw_paths = st.tuples(st.booleans(), st.lists(components, min_size=1, max_size=5)).map(
    lambda t: ("/" if t[0] else "") + "/".join(t[1]))
open_flags = st.tuples(st.sampled_from(sorted(FLAGS.values())),
                       st.sets(st.sampled_from([os.O_CREAT, os.O_TRUNC, os.O_APPEND,
                                                os.O_CLOEXEC]))).map(
    lambda t: t[0] | sum(t[1]))
opens = st.lists(st.tuples(raw_paths, open_flags, st.sampled_from(CWDS),
                           st.sampled_from(["cat", "sh"])), min_size=1, max_size=12)


def _fake_proc(root: Path) -> None:
    (root / "stat").write_text("cpu 0\nbtime 1700000000\n")
    for pid, cwd in enumerate(CWDS, start=100):
        d = root / str(pid)
        d.mkdir()
        (d / "stat").write_text(f"{pid} (cat) S 1 {pid} {pid} 0 -1 0 0 0 0 0 0 0 0 0 "
                                "20 0 1 0 100 0 0")
        (d / "cmdline").write_bytes(b"cat\0")
        (d / "status").write_text(f"Name:\tcat\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
                                  f"NSpid:\t{pid}\n")
        (d / "cgroup").write_text("0::/\n")
        (d / "loginuid").write_text("4294967295")
        (d / "cwd").symlink_to(cwd)
        (d / "exe").symlink_to("/usr/bin/cat")


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    root = tmp_path_factory.mktemp("proc")
    _fake_proc(root)
    table = ProcessTable(str(root))
    table.seed()
    return Tracker(StateContext(table=table, containers=ContainerRegistry(None),
                                proc_root=str(root), hostname="h"))


def _rules_text(conds: list[str]) -> str:
    return "".join(f"""
- rule: r{i}
  desc: d
  condition: {cond}
  output: o
  priority: WARNING
""" for i, cond in enumerate(conds))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(conds=rule_sets, events=opens)
def test_the_kernel_filter_never_drops_an_open_a_rule_matches(
        tracker: Tracker, conds: list[str], events: list[tuple[str, int, str, str]]) -> None:
    engine = Engine(load_text(_rules_text(conds)))
    filt = open_filter_for(engine.rules)
    for raw, flags, cwd, comm in events:
        pid = 100 + CWDS.index(cwd)
        event = tracker.apply(decode(pack(code=sc.CODES["openat"], tgid=pid, comm=comm,
                                          ret=3, ints=(-100, flags, 0o600), path1=raw)))
        matched = [r.name for r in engine.matching_rules(event)]
        if matched:
            assert kernel_passes(filt, raw, flags), (
                f"dropped {raw!r} (cwd {cwd}, flags {flags:#o}, fd.name "
                f"{event.get('fd.name')!r}) that {matched} match; filter {filt}")


def test_the_three_upstream_files_with_a_rule_on_reads_of_any_path(tmp_path: Path) -> None:
    """Issue 14 (b): with the three upstream files, `/` and `/etc/` are in the trie for
    writes; a rule on reads of any path adds `(any)` for reads. A read below `/etc` finds
    `/etc/`, the longest entry, which must carry the reads of `(any)` too."""
    from enforcer.rules.loader import load_rules  # noqa: PLC0415

    extra = tmp_path / "reads.yaml"
    extra.write_text(_rules_text(["evt.type in (open,openat,openat2) and "
                                  "evt.is_open_read=true and proc.name = probe-reader"]))
    data = Path(__file__).parents[2] / "data" / "falco-rules"
    upstream = [data / f for f in ("falco_rules.yaml", "falco-incubating_rules.yaml",
                                   "falco-sandbox_rules.yaml")]
    filt = open_filter_for(Engine(load_rules([*upstream, extra])).rules)
    assert filt is not None and "/etc/" in filt.prefixes and "" in filt.prefixes
    for path in ("/etc/hostname", "/etc/apt/x", "/usr/bin/x", "/tmp/x", "/root/.ssh/x",
                 "/x", "/"):
        assert kernel_passes(filt, path, os.O_RDONLY), path


# --- the descriptor table's records (issue 14 point 3) ----------------------------------
# When no rule asks for close, dup*, fcntl, socket..., the kernel sends only the records
# that change the fd table (probe.fd_state, modelled by probe.fd_state_model). Property:
# a table fed only those records ends exactly as one fed every record, and both hold
# exactly the process's sockets (no entry outlives its descriptor).

from enforcer.sources.probe import fd_state_model  # noqa: E402
from enforcer.state.fd_table import FdTable, key  # noqa: E402

PID = 4242
SOCK_CLOEXEC = 0o2000000
O_CLOEXEC = 0o2000000
FD_OPS = st.one_of(
    st.tuples(st.just("socket"), st.booleans()),
    st.tuples(st.just("accept4"), st.integers(0, 7), st.booleans()),
    st.tuples(st.just("pipe"),),
    st.tuples(st.just("pipe2"), st.booleans()),
    st.tuples(st.just("open"), st.booleans()),
    st.tuples(st.just("dup"), st.integers(-1, 9)),
    st.tuples(st.just("dup2"), st.integers(-1, 9), st.integers(0, 9)),
    st.tuples(st.just("dup3"), st.integers(-1, 9), st.integers(0, 9), st.booleans()),
    st.tuples(st.just("fcntl"), st.integers(-1, 9), st.sampled_from([0, 1030, 2, 1, 3, 4]),
              st.integers(0, 5)),
    st.tuples(st.just("close"), st.integers(-1, 9)),
    st.tuples(st.just("close_range"), st.integers(0, 9), st.integers(0, 9),
              st.sampled_from([0, 4])),
    st.tuples(st.just("exec")),
)


class _Keys:
    """The kernel's tracked set as userspace writes it (FdKeys), for one process."""

    def __init__(self, tracked: set[int]):
        self.tracked = tracked
        self.synced_pids: list[int] = []

    def add(self, keys: list[int]) -> None:
        self.tracked.update(k & 0xFFFFFFFF for k in keys if k >> 32 == PID)

    def remove(self, keys: list[int]) -> None:
        self.tracked.difference_update(k & 0xFFFFFFFF for k in keys if k >> 32 == PID)

    def synced(self, pid: int) -> None:
        self.synced_pids.append(pid)


class _Process:
    """What the kernel does to one process's descriptors: lowest free number first."""

    def __init__(self) -> None:
        self.fds: dict[int, tuple[str, bool]] = {}  # fd -> (socket|pipe|file, cloexec)

    def lowest(self, start: int = 0) -> int:
        fd = start
        while fd in self.fds:
            fd += 1
        return fd

    def run(self, op: tuple) -> tuple[str, tuple[int, ...], int] | None:
        """Do op; the (syscall, arguments, result) record it makes, None for exec/open."""
        name = op[0]
        if name == "exec":
            self.fds = {fd: v for fd, v in self.fds.items() if not v[1]}
            return None
        if name == "open":
            self.fds[self.lowest()] = ("file", op[1])
            return None
        if name == "socket":
            fd = self.lowest()
            self.fds[fd] = ("socket", op[1])
            return "socket", (2, 1 | (SOCK_CLOEXEC if op[1] else 0), 0), fd
        if name in ("pipe", "pipe2"):
            cloexec = name == "pipe2" and op[1]
            ends = [self.lowest()]
            self.fds[ends[0]] = ("pipe", cloexec)
            ends.append(self.lowest())
            self.fds[ends[1]] = ("pipe", cloexec)
            pair = ends[0] | ends[1] << 32  # slot 4, as the exit handler packs it
            if name == "pipe":
                return "pipe", (0x7FF0, 0, 0, 0, pair), 0
            return "pipe2", (0x7FF0, O_CLOEXEC if cloexec else 0, 0, 0, pair), 0
        if name == "accept4":
            listener = op[1]
            if self.fds.get(listener, ("",))[0] != "socket":
                return "accept4", (listener, 0, 0, 0), -9
            fd = self.lowest()
            self.fds[fd] = ("socket", op[2])
            return "accept4", (listener, 0, 0, SOCK_CLOEXEC if op[2] else 0), fd
        old = op[1]
        if name in ("dup", "dup2", "dup3", "fcntl") and old not in self.fds:
            args = ((old,) if name == "dup" else (old, op[2]) if name == "dup2"
                    else (old, op[2], 0) if name == "dup3" else (old, op[2], op[3]))
            return name, tuple(a & 0xFFFFFFFF for a in args), -9
        if name == "dup":
            fd = self.lowest()
            self.fds[fd] = (self.fds[old][0], False)
            return "dup", (old,), fd
        if name in ("dup2", "dup3"):
            new, cloexec = op[2], name == "dup3" and op[3]
            if name == "dup3" and new == old:
                return name, (old, new, 0o2000000 if cloexec else 0), -22
            if new != old:
                self.fds[new] = (self.fds[old][0], cloexec)
            args = (old, new) if name == "dup2" else (old, new, 0o2000000 if cloexec else 0)
            return name, args, new
        if name == "fcntl":
            cmd, arg = op[2], op[3]
            if cmd in (0, 1030):
                fd = self.lowest(arg)
                self.fds[fd] = (self.fds[old][0], cmd == 1030)
                return "fcntl", (old, cmd, arg), fd
            if cmd == 2:
                self.fds[old] = (self.fds[old][0], bool(arg & 1))
            return "fcntl", (old, cmd, arg), 0
        if name == "close":
            if old not in self.fds:
                return "close", (old & 0xFFFFFFFF,), -9
            del self.fds[old]
            return "close", (old,), 0
        lo, hi, flags = op[1], op[2], op[3]
        if lo > hi:
            return "close_range", (lo, hi, flags), -22
        for fd in [fd for fd in self.fds if lo <= fd <= hi]:
            if flags & 4:
                self.fds[fd] = (self.fds[fd][0], True)
            else:
                del self.fds[fd]
        return "close_range", (lo, hi, flags), 0


def _sockets(table: FdTable) -> dict[int, tuple[str, bool]]:
    out = {}
    for k in table.all_keys():
        ent = table.get(PID, k & 0xFFFFFFFF)
        assert ent is not None
        out[k & 0xFFFFFFFF] = ("pipe" if ent.type == "pipe" else "socket", ent.cloexec)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FD_OPS, min_size=1, max_size=40))
def test_reduced_fd_records_keep_the_table_whole(ops: list[tuple]) -> None:
    proc = _Process()
    tracked: set[int] = set()
    every = FdTable(proc_root="/nonexistent")
    reduced = FdTable(proc_root="/nonexistent", keys=_Keys(tracked))
    for op in ops:
        rec = proc.run(op)
        if rec is None:
            if op[0] == "exec":
                every.on_exec(PID)
                reduced.on_exec(PID)
            continue
        name, args, ret = rec
        fields = decode(pack(code=sc.CODES[name], tgid=PID, ret=ret, ints=args))
        every.apply(fields)
        if fd_state_model(name, args, ret, tracked):
            if name in ("pipe", "pipe2"):  # the handler tracks the pair it read
                tracked.update((args[4] & 0xFFFFFFFF, args[4] >> 32))
            reduced.apply(fields)
        truth = {fd: (kind, cloexec) for fd, (kind, cloexec) in proc.fds.items()
                 if kind in ("socket", "pipe")}
        assert _sockets(every) == truth, (op, rec)
        assert _sockets(reduced) == truth, (op, rec)
        # the kernel knows every descriptor the table holds, or their closes are lost
        assert set(truth) <= tracked, (op, rec, tracked)
    assert key(PID, 0) >> 32 == PID


# -- forks: the kernel keys the child's copies itself; userspace reads records late -------
# Two processes, the parent and (after a fork) its child, do random descriptor calls. The
# kernel decides which records cross with its state at the time (fd_state_model, and
# fork_fds_model at the fork); userspace reads them later, at random points, in order,
# and its pushes of keys (the fork's copies, a dup in an unsynced child) reach the kernel
# only then. After the last read both tables equal what each process really holds.

from enforcer.sources.probe import fork_fds_model  # noqa: E402

CHILD = PID + 1
FORK_OPS = st.one_of(
    st.tuples(st.sampled_from([PID, CHILD]), FD_OPS),
    st.tuples(st.sampled_from([PID, CHILD]),
              st.tuples(st.just("fcntl"), st.integers(0, 9), st.just(0),
                        st.sampled_from([64, 70]))),
    # the pipeline child's first moves: close what it inherited, reuse the numbers
    st.tuples(st.just(CHILD), st.tuples(st.just("close"), st.integers(0, 3))),
    st.tuples(st.just(CHILD), st.tuples(st.just("open"), st.booleans())),
    st.tuples(st.just(PID), st.tuples(st.just("pipe2"), st.booleans())),
    st.just(("fork",)),
    st.just(("read",)),
)


class _Kernel:
    """fd_tracked, fd_holders and fd_unsynced, for two processes."""

    def __init__(self) -> None:
        self.tracked: dict[int, set[int]] = {PID: set(), CHILD: set()}
        self.max_fd: dict[int, int] = {}
        self.unsynced: set[int] = set()

    def add(self, keys: list[int]) -> None:
        for k in keys:
            self.tracked.setdefault(k >> 32, set()).add(k & 0xFFFFFFFF)

    def remove(self, keys: list[int]) -> None:
        for k in keys:
            self.tracked.setdefault(k >> 32, set()).discard(k & 0xFFFFFFFF)

    def synced(self, pid: int) -> None:
        self.unsynced.discard(pid)


def _held(table: FdTable, pid: int) -> dict[int, tuple[str, bool]]:
    fds = table._fds.get(pid, {})
    return {fd: ("pipe" if e.type == "pipe" else "socket", e.cloexec) for fd, e in fds.items()}


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(FORK_OPS, min_size=1, max_size=50))
@example([(PID, ("socket", False)), ("fork",), (CHILD, ("close", 0)),
          (CHILD, ("open", False))])
@example([(PID, ("socket", False)), (PID, ("fcntl", 0, 0, 70)), ("fork",),
          (CHILD, ("close", 70)), ("read",), (CHILD, ("dup2", 0, 5))])
def test_a_child_s_records_keep_its_table_whole_however_late_they_are_read(
        ops: list[tuple]) -> None:
    procs = {PID: _Process()}
    kernel = _Kernel()
    reduced = FdTable(proc_root="/nonexistent", keys=kernel)
    queue: list[tuple] = []  # what crossed, not read yet

    def read() -> None:
        for item in queue:
            if item[0] == "fork":
                reduced.on_fork(PID, CHILD)
            elif item[0] == "exec":
                reduced.on_exec(item[1])
            else:
                reduced.apply(item[1])
        queue.clear()

    for op in ops:
        if op[0] == "read":
            read()
            continue
        if op[0] == "fork":
            if CHILD in procs:
                continue
            child = _Process()
            child.fds = dict(procs[PID].fds)
            procs[CHILD] = child
            copied, unsynced = fork_fds_model(kernel.tracked[PID], kernel.max_fd.get(PID))
            kernel.tracked[CHILD] = copied
            if PID in kernel.max_fd:
                kernel.max_fd[CHILD] = kernel.max_fd[PID]
            if unsynced:
                kernel.unsynced.add(CHILD)
            queue.append(("fork",))
            continue
        pid, call = op
        if pid not in procs:
            continue
        rec = procs[pid].run(call)
        if rec is None:
            if call[0] == "exec":
                queue.append(("exec", pid))
            continue
        name, args, ret = rec
        tracked = kernel.tracked[pid]
        before = set(tracked)
        if fd_state_model(name, args, ret, tracked, pid in kernel.unsynced):
            if name in ("pipe", "pipe2"):
                tracked.update((args[4] & 0xFFFFFFFF, args[4] >> 32))
            queue.append(("rec", decode(pack(code=sc.CODES[name], tgid=pid, ret=ret,
                                             ints=args))))
        made = tracked - before  # fd_track() keeps the highest number in fd_holders
        if made:
            kernel.max_fd[pid] = max(kernel.max_fd.get(pid, 0), *made)
    read()
    for pid, proc in procs.items():
        truth = {fd: v for fd, v in proc.fds.items() if v[0] in ("socket", "pipe")}
        assert _held(reduced, pid) == truth, (pid, ops)
