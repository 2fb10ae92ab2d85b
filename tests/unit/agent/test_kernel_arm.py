"""Arming the in-kernel kill from the process table (fake /proc, fake kernel maps): which
processes get an entry, the templates for their children, and the stamps that keep the
kernel from trusting an entry computed from a table that is behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.kernel.arming import STAMP_FORK, STAMP_POISON, STAMP_RENAMED, Arming, armed_rules
from enforcer.kernel.kill_tables import KillTables
from enforcer.rules.loader import load_rules
from enforcer.sources import syscalls as sc
from enforcer.sources.decode import decode, pack
from enforcer.state.containers import HOST_INFO, K8S_NAMESPACE, ContainerInfo
from enforcer.state.live_event import StateContext
from enforcer.state.process_table import ProcessTable
from enforcer.state.tracker import Tracker
from tests.unit.state.test_process_table import CID, _fake_proc, _proc, _tracker

UPSTREAM = Path(__file__).resolve().parents[2] / "data" / "falco-rules" / "falco_rules.yaml"


class FakeMaps:
    def __init__(self) -> None:
        self.entries: dict[int, tuple] = {}
        self.parents: dict[int, tuple] = {}
        self.templates: dict[int, tuple[int, dict[str, int]]] = {}
        self.children: dict[int, tuple[int, dict[str, int]]] = {}
        self.stamps: dict[int, tuple[int, int]] = {}
        self.conjs: dict[int, tuple] = {}
        self.paths: dict[bytes, tuple[int, int]] = {}
        self.ports: dict[int, int] = {}
        self.addrs: dict[tuple[int, bytes], int] = {}
        self.prefixes: list[str] = []

    def set_comm_prefixes(self, prefixes):
        self.prefixes = list(prefixes)

    def set_conj(self, index, *row):
        self.conjs[index] = row

    def set_path(self, key, always, noslash):
        self.paths[key] = (always, noslash)

    def set_ports(self, bits):
        self.ports.update(bits)

    def set_addr(self, prefixlen, key, bits):
        self.addrs[(prefixlen, key)] = bits

    def put(self, tgid, conj, uid, gid, cgroup, comm, deps):
        self.entries[tgid] = (conj, comm, deps)

    def delete(self, tgid):
        self.entries.pop(tgid, None)

    def stamp(self, pid):
        return self.stamps.get(pid, (0, 0))

    def set_template(self, tmpl, default, comms, child_default=-1, child_comms=None):
        self.templates[tmpl] = (default, comms)
        self.children[tmpl] = (child_default, child_comms or {})

    def put_parent(self, tgid, tmpl, uid, gid, cgroup, deps):
        self.parents[tgid] = (tmpl, deps)

    def delete_parent(self, tgid):
        self.parents.pop(tgid, None)


@pytest.fixture(scope="module")
def rule():
    return load_rules([str(UPSTREAM)]).rules["Read sensitive file untrusted"]


def setup(tmp_path: Path, rule) -> tuple:
    tracker = _tracker(_fake_proc(tmp_path))
    maps = FakeMaps()
    # the kernel's clock, in the records' units: every stamp here is recent unless a test
    # moves it on
    arming = Arming(armed_rules([rule]), maps, agent_tgid=999, clock=lambda: 200)
    arming.seed(tracker.ctx, [1, 100, 200])
    return tracker, maps, arming


def apply(tracker, arming, raw: bytes) -> None:
    rec = decode(raw)
    tracker.apply(rec)
    arming.after(rec, tracker.ctx)


def test_shells_are_trusted_but_their_children_are_armed_by_comm(tmp_path, rule):
    tracker, maps, arming = setup(tmp_path, rule)
    assert maps.entries == {}  # init is spared; bash and sh are trusted shells
    tmpl, deps = maps.parents[100]
    assert [pid for pid, _ in deps] == [100, 1]  # bash and its chain (up to aname[4])
    default, comms = maps.templates[tmpl]
    assert default  # a child with any other comm: the sensitive paths remain
    assert comms["sshd"] == 0 and comms["bash"] == 0  # trusted programs: nothing
    assert 1 not in maps.parents  # PID 1's children: not from init's template
    # a child of bash gets its own template at exec: a child of `sh` (bash -> sh -> cat)
    child_default, child_comms = maps.children[tmpl]
    grand = child_comms.get("sh", child_default)
    assert grand >= 0 and maps.templates[grand][0]  # its cat child is armed
    assert maps.templates[grand][1]["sshd"] == 0


def test_a_grandchild_through_any_other_comm_is_armed(tmp_path, rule):
    """`unshare -f cat /etc/shadow`, `timeout 5 cat ...` from a known shell: the child in
    between has a comm the rule does not name. The rule checks `proc.aname[1] startswith
    google_accounts`, which "any other comm" could not decide, so the kernel's template
    for such a child's children armed nothing (only the late userspace arming caught the
    cat: 2 of 20 live). Now the kernel keeps the default off comms with such a prefix."""
    tracker, maps, arming = setup(tmp_path, rule)
    tmpl, _deps = maps.parents[100]
    child_default, child_comms = maps.children[tmpl]
    assert "unshare" not in child_comms and "timeout" not in child_comms
    assert child_default >= 0 and maps.templates[child_default][0]  # its cat is armed
    # a comm with the prefix has entries of its own: the kernel never gives it the default
    assert "google_accounts" in maps.prefixes
    assert "google_accounts" in child_comms
    assert "google_accounts" in maps.templates[child_default][1]


def test_exec_arms_and_stale_stamps_refuse(tmp_path, rule):
    tracker, maps, arming = setup(tmp_path, rule)
    apply(tracker, arming, pack(code=sc.EV_FORK, tgid=100, ints=(101, 100), ts=10))
    maps.stamps[101] = (7, 50)  # the kernel saw an exec at 50 the table has not applied
    apply(tracker, arming, pack(code=sc.CODES["execve"], tgid=101, comm="cat",
                                path1="/usr/bin/cat", argv=("cat", "/etc/shadow"), ts=40))
    assert 101 not in maps.entries and arming.refusals
    apply(tracker, arming, pack(code=sc.CODES["execve"], tgid=101, comm="cat",
                                path1="/usr/bin/cat", argv=("cat", "/etc/shadow"), ts=60))
    conj, comm, deps = maps.entries[101]
    assert conj and comm == b"cat" and deps[0] == (101, 7)
    tables: KillTables = arming.tables
    assert {frozenset(a for s in (row.paths_all,) for a in [s]) for row in tables.rows}
    maps.stamps[100] = (9 | STAMP_POISON, 70)  # bash renamed itself: never trusted again
    before = maps.entries[101]
    apply(tracker, arming, pack(code=sc.CODES["execve"], tgid=101, comm="cat",
                                path1="/usr/bin/cat", argv=("cat", "x"), ts=80))
    # not armed again; what the kernel holds is left alone: it carries bash's old stamp,
    # which the kernel no longer trusts (and its exec replaced it in the real kernel)
    assert 101 not in arming.armed and maps.entries[101] == before
    assert (100, 9 | STAMP_POISON) not in maps.entries[101][2]
    apply(tracker, arming, pack(code=sc.EV_EXIT, tgid=101, ts=90))
    assert 101 not in arming.deps_of


def test_fork_stamps_allow_the_tolerance(tmp_path, rule):
    tracker, maps, arming = setup(tmp_path, rule)
    apply(tracker, arming, pack(code=sc.EV_FORK, tgid=100, ints=(102, 100), ts=1_000_000))
    assert 102 not in maps.entries  # a forked bash is still a trusted shell
    maps.stamps[102] = (6, 2_999_000)
    apply(tracker, arming, pack(code=sc.CODES["execve"], tgid=102, comm="less",
                                path1="/usr/bin/less", argv=("less",), ts=3_000_000))
    assert maps.entries[102][2][0] == (102, 6)
    maps.stamps[103] = (7 | STAMP_FORK, 3_500_500)  # stamped just after the fork record
    apply(tracker, arming, pack(code=sc.EV_FORK, tgid=102, ints=(103, 102), ts=3_500_000))
    assert maps.entries[103][2][:2] == [(103, 7 | STAMP_FORK), (102, 6)]
    maps.stamps[104] = (8 | STAMP_FORK, 5_500_000)  # 2 ms after the record: another fork
    apply(tracker, arming, pack(code=sc.EV_FORK, tgid=102, ints=(104, 102), ts=3_500_000))
    assert 104 not in maps.entries


def test_lpm_entries_answer_directories_and_prefixes():
    from enforcer.kernel.residue import ALL_CLASSES, BOTH, Conjunct

    tables = KillTables(["r"])
    dirs = frozenset({("dir", "/etc/pam.d")})
    names = frozenset({("exact", "/etc/shadow"), ("prefix", "/etc/pam.d/x")})
    tables.slot(0, Conjunct(frozenset({"openat"}), ALL_CLASSES, BOTH, frozenset({dirs}),
                            frozenset({names})))
    entries = tables.lpm_entries()
    d, n = 1 << tables.path_sets[dirs], 1 << tables.path_sets[names]
    assert entries[b"/etc/pam.d/"] == (0, d)  # only when no '/' follows the key
    assert entries[b"/etc/shadow\0"] == (n, 0)
    assert entries[b"/etc/pam.d/x"] == (n, d)


def _cat_of_bash(tracker, arming, maps) -> None:
    apply(tracker, arming, pack(code=sc.EV_FORK, tgid=100, comm="bash", ints=(101, 100),
                                ts=10))
    maps.stamps[101] = (7, 20)
    apply(tracker, arming, pack(code=sc.CODES["execve"], tgid=101, comm="cat",
                                path1="/usr/bin/cat", argv=("cat", "/etc/shadow"), ts=30))
    assert 101 in arming.armed


def test_a_rename_by_the_main_thread_is_trusted_once_the_table_has_the_name(tmp_path, rule):
    """busybox run as an applet renames itself (PR_SET_NAME, stamped RENAMED by the
    kernel): its children and itself are armed again once a later record of its main
    thread (a fork's included) gave the table the new name."""
    tracker, maps, arming = setup(tmp_path, rule)
    _cat_of_bash(tracker, arming, maps)
    maps.stamps[100] = (9 | STAMP_RENAMED, 70)
    apply(tracker, arming, pack(code=sc.CODES["execve"], tgid=101, comm="cat",
                                path1="/usr/bin/cat", argv=("cat", "x"), ts=80))
    assert 101 not in arming.armed and 100 in arming.renamed_wait
    # a record of bash's main thread made before the rename proves nothing
    apply(tracker, arming, pack(code=sc.EV_FORK, tgid=100, comm="bash", ints=(102, 100),
                                ts=60))
    assert 101 not in arming.armed
    apply(tracker, arming, pack(code=sc.EV_FORK, tgid=100, comm="bash2", ints=(103, 100),
                                ts=90))
    assert tracker.ctx.table.get(100).comm == "bash2"
    assert 101 in arming.armed and (100, 9 | STAMP_RENAMED) in maps.entries[101][2]


def test_a_rename_is_not_trusted_in_a_process_with_other_threads(tmp_path, rule):
    tracker, maps, arming = setup(tmp_path, rule)
    _cat_of_bash(tracker, arming, maps)
    # another thread of bash made a record: the table's comm may be that thread's
    apply(tracker, arming, pack(code=sc.CODES["openat"], tgid=100, tid=150, comm="bash",
                                ret=3, path1="/etc/hosts", ts=40))
    maps.stamps[100] = (9 | STAMP_RENAMED, 70)
    apply(tracker, arming, pack(code=sc.EV_FORK, tgid=100, comm="bash2", ints=(103, 100),
                                ts=90))
    apply(tracker, arming, pack(code=sc.CODES["execve"], tgid=101, comm="cat",
                                path1="/usr/bin/cat", argv=("cat", "x"), ts=100))
    assert 101 not in arming.armed


def test_an_exec_ends_the_other_threads_so_a_later_rename_is_trusted(tmp_path, rule):
    """A container's PID 1 starts as the runtime's multi-threaded init (runc's Go threads
    make records), execs the container's shell, and busybox renames itself: the exec left
    one thread, so the rename is trusted again once the table has the new name. It was
    not, and the container's children were never armed by the kernel (CI, twice)."""
    tracker, maps, arming = setup(tmp_path, rule)
    _cat_of_bash(tracker, arming, maps)
    apply(tracker, arming, pack(code=sc.CODES["openat"], tgid=100, tid=150, comm="bash",
                                ret=3, path1="/etc/hosts", ts=40))
    assert 100 in arming.threaded
    maps.stamps[100] = (8, 45)
    apply(tracker, arming, pack(code=sc.CODES["execve"], tgid=100, comm="exe",
                                path1="/bin/busybox", argv=("sh",), ts=45))
    assert 100 not in arming.threaded
    maps.stamps[100] = (9 | STAMP_RENAMED, 70)
    apply(tracker, arming, pack(code=sc.EV_FORK, tgid=100, comm="sh", ints=(103, 100),
                                ts=90))
    apply(tracker, arming, pack(code=sc.CODES["execve"], tgid=101, comm="cat",
                                path1="/usr/bin/cat", argv=("cat", "x"), ts=100))
    assert 101 in arming.armed and (100, 9 | STAMP_RENAMED) in maps.entries[101][2]


def test_a_change_whose_record_was_lost_is_read_from_proc(tmp_path, rule):
    """Threat: a workload floods the ring so that the exec record of a process is lost; its
    exec stamp is then never confirmed, and nothing that depends on it (a container's whole
    tree) would ever be armed by the kernel again. A second on, the process is read from
    /proc (its stamp read before and after), and what depends on it is armed again at the
    next poll; a late record made before that read does not set the table back."""
    tracker, maps, arming = setup(tmp_path, rule)
    apply(tracker, arming, pack(code=sc.EV_FORK, tgid=100, comm="bash", ints=(101, 100),
                                ts=10))
    maps.stamps[100] = (9, 20)  # bash exec'd again at 20: that record was lost
    maps.stamps[101] = (7, 30)
    apply(tracker, arming, pack(code=sc.CODES["execve"], tgid=101, comm="cat",
                                path1="/usr/bin/cat", argv=("cat", "/etc/shadow"), ts=30))
    assert 101 not in arming.armed and arming.resyncs == 0  # within a second: wait
    arming.clock = lambda: 20 + 2_000_000_000
    arming.arm(tracker.ctx, tracker.ctx.table.get(101), 0, 0, 0)
    assert arming.resyncs == 1 and arming.resync_rearm == {100}
    arming.rearm_resynced(tracker.ctx)
    assert 101 in arming.armed and (100, 9) in maps.entries[101][2]
    # a record of bash made before the read, arriving now, leaves /proc's view in place
    apply(tracker, arming, pack(code=sc.CODES["openat"], tgid=100, comm="bashold", ret=3,
                                path1="/etc/hosts", ts=15))
    assert tracker.ctx.table.get(100).comm == "bash"


def test_a_change_that_cannot_be_read_is_reported_once(tmp_path, rule, caplog):
    """The process whose change was lost is gone from /proc: it cannot be read, the
    process that depends on it stays unarmed, and the agent says why, once for it."""
    tracker, maps, arming = setup(tmp_path, rule)
    apply(tracker, arming, pack(code=sc.EV_FORK, tgid=100, comm="bash", ints=(101, 100),
                                ts=10))
    (tmp_path / "proc" / "100" / "stat").unlink()
    maps.stamps[100] = (9, 20)
    arming.clock = lambda: 20 + 5_000_000_000
    for ts in (30, 40):
        maps.stamps[101] = (7, ts)
        apply(tracker, arming, pack(code=sc.CODES["execve"], tgid=101, comm="cat",
                                    path1="/usr/bin/cat", argv=("cat", "/etc/shadow"), ts=ts))
    assert 101 not in arming.armed and arming.resyncs == 0
    warned = [r.getMessage() for r in caplog.records if "still not in the process table"
              in r.getMessage()]
    assert len(warned) == 1 and "an exec of pid 100" in warned[0]



class LateRegistry:
    """Container metadata whose lookup is pending until `store()` (the lookup thread's
    moment to store the answer); every get() after that has the name."""

    def __init__(self, info: ContainerInfo) -> None:
        self.info = info
        self.stored = False
        self.pending_reads = 0

    def get(self, full_id: str, runtime: str | None = None) -> ContainerInfo:
        if not full_id:
            return HOST_INFO
        if self.stored:
            return self.info
        self.pending_reads += 1
        return ContainerInfo(id=full_id[:12], full_id=full_id, pending=True)

    def store(self) -> None:
        self.stored = True


def test_metadata_stored_while_pid_1_is_armed_leaves_it_admitted_or_waiting(tmp_path, rule):
    """Race (CI's arming trace: name known, admitted=False, waiting=False): the container's
    PID 1 is armed while its metadata lookup is pending, and the lookup thread stores the
    name right after admission read it. Admission refused (pending: the namespace guard
    cannot be checked) and the wait check, reading again, found the name (not waiting), so
    PID 1 stayed refused for good and the kernel never armed one of its children. Metadata
    read once per arming: PID 1 waits, and once a record of it comes (here a fork), it is
    admitted and its children's template arms the rule."""
    root = _fake_proc(tmp_path)
    (root / "200" / "status").write_text("Name:\tsh\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
                                         "NSpid:\t200\t1\n")  # the container's PID 1
    table = ProcessTable(str(root))
    table.seed()
    registry = LateRegistry(ContainerInfo(id=CID[:12], full_id=CID, name="web",
                                          labels={K8S_NAMESPACE: "shop"}))
    tracker = Tracker(StateContext(table=table, containers=registry, proc_root=str(root),
                                   hostname="h"))

    def admits(_rule: str, get) -> bool:
        # the responder's check (Responder.admits_in_kernel): a container whose metadata is
        # not known yet is refused until it is; the lookup completes just after this read
        known = get("container.id") in (None, "", "host") or get("container.name") is not None
        registry.store()
        return known

    maps = FakeMaps()
    arming = Arming(armed_rules([rule]), maps, agent_tgid=999, clock=lambda: 200,
                    admits=admits)
    arming.seed(tracker.ctx, [200])
    assert registry.pending_reads and 200 in arming.denied  # refused while pending...
    assert 200 in arming.waiting_container, "refused and not waiting: never armed again"
    apply(tracker, arming, pack(code=sc.EV_FORK, tgid=200, comm="sh", ints=(201, 200),
                                ts=10))
    assert 200 not in arming.denied
    tmpl, _deps = maps.parents[200]
    default, comms = maps.templates[tmpl]
    assert default and comms.get("cat", default)  # a cat child of PID 1 dies in the kernel


def test_a_process_whose_start_was_lost_is_armed_at_its_first_fork(tmp_path, rule):
    """Threat: a flood loses every record of a container's PID 1 starting (runc's fork,
    its exec, busybox's rename). A later record of its main thread confirms the rename the
    kernel stamped, so nothing depending on it is ever refused and read again from /proc,
    and nothing else arms it: no template for its children, so none of its `cat`s is
    killed in the kernel (seen live: tests/system/test_flood_resync_container.py). The
    first record that comes of a process never armed arms it, its template first."""
    root = _fake_proc(tmp_path)
    _proc(root, 300, "sh", 100, ["sh"])  # started during the flood: no record of it came
    tracker = _tracker(root)
    maps = FakeMaps()
    arming = Arming(armed_rules([rule]), maps, agent_tgid=999, clock=lambda: 200)
    arming.seed(tracker.ctx, [1, 100, 200])
    maps.stamps[300] = (STAMP_RENAMED | 7, 20)  # its rename, the last change the kernel saw
    assert 300 not in maps.parents
    apply(tracker, arming, pack(code=sc.EV_FORK, tgid=300, comm="sh", ints=(301, 300),
                                ts=30))
    tmpl, deps = maps.parents[300]
    assert (300, STAMP_RENAMED | 7) in deps
    default, _comms = maps.templates[tmpl]
    assert default  # its cat child dies in the kernel


class ExecWhileArming(FakeMaps):
    """The kernel's side of an exec that lands while userspace arms the process: right
    after the `at`-th read of its stamp, the process execs `cat /etc/shadow` (the fake
    /proc shows it), and the kernel stamps it and arms it from its parent's template, as
    bpf/enforce.c's rearm_from_parent does (an entry for `cat` and a template for its
    children, both with the exec's stamp)."""

    def __init__(self, root: Path, pid: int, parent: int, at: int) -> None:
        super().__init__()
        self.root, self.pid, self.parent, self.at = root, pid, parent, at
        self.reads = 0
        self.exec_stamp = (40, 150)
        self.fired = False

    def stamp(self, pid):
        got = super().stamp(pid)
        if pid == self.pid and not self.fired:
            self.reads += 1
            if self.reads == self.at:
                self.exec_now()
        return got

    def exec_now(self) -> None:
        self.fired = True
        for f in (self.root / str(self.pid)).iterdir():
            f.unlink()
        (self.root / str(self.pid)).rmdir()
        _proc(self.root, self.pid, "cat", self.parent, ["cat", "/etc/shadow"])
        self.stamps[self.pid] = self.exec_stamp
        own = (self.pid, self.exec_stamp[0])
        self.entries[self.pid] = (1, b"cat", [own, (self.parent, 0)])
        self.parents[self.pid] = (0, [own, (self.parent, 0)])


@pytest.mark.parametrize("at", [1, 2, 3, 4])
def test_an_exec_while_the_fork_is_armed_leaves_the_kernel_a_current_entry(tmp_path, rule,
                                                                          at):
    """Race (about 1 in 1000 `cat /etc/shadow` from an untrusted parent on a loaded host
    read the file, killed only by the userspace backstop): userspace handles the child's
    FORK record, reads its stamps, and writes its entry and its template computed for the
    child before its exec. The child execs `cat` in between: the kernel armed it then,
    and the write replaced that with entries for the old name and stamp, which the kernel
    refuses ("changed since exec") until the exec record is handled. Wherever the exec
    lands among userspace's reads, the kernel is left entries for what the child is now."""
    root = _fake_proc(tmp_path)
    _proc(root, 300, "python3", 100, ["python3", "run.py"])  # not a trusted program
    _proc(root, 301, "python3", 300, ["python3", "run.py"])  # its child, not exec'd yet
    tracker = _tracker(root)
    maps = ExecWhileArming(root, 301, 300, at)
    arming = Arming(armed_rules([rule]), maps, agent_tgid=999, clock=lambda: 200)
    arming.seed(tracker.ctx, [1, 100, 300])
    maps.stamps[301] = (5 | STAMP_FORK, 10)
    apply(tracker, arming, pack(code=sc.EV_FORK, tgid=300, comm="python3", ints=(301, 300),
                                ts=10))
    assert maps.fired, "the exec never landed: the test no longer reproduces the race"
    conj, comm, deps = maps.entries[301]
    assert conj and comm == b"cat" and deps[0] == (301, 40), "stale kill entry"
    _tmpl, tdeps = maps.parents[301]
    assert tdeps[0] == (301, 40), "stale template for its children"
