"""The process table, like Falco's thread table: seeded from /proc at start, then kept by
fork, exec, exit and chdir events, so that proc.* fields (parent, ancestors, cmdline, cwd,
tty, container) are known even for processes that have already exited when a rule reads
them.

Keyed by thread id: a fork event creates an entry for the new task, whether it turns out to
be a process or a thread; events look processes up by tgid, and an exit removes the task.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from enforcer.state.cgroups import HOST_IDENTITY, CgroupIdentity, identify
from enforcer.state.exe_image import Creds, ExeImage, ExeInspector, parse_status

UNSET_LOGINUID = 0xFFFFFFFF
MAX_ANCESTORS = 32


@dataclass(slots=True)
class Proc:
    """What the table knows about one process."""

    pid: int
    ppid: int = 0
    comm: str = ""
    exe: str = ""  # argv[0], as Falco's proc.exe
    exepath: str = ""  # the executable's full path
    args: list[str] = field(default_factory=list)  # argv[1:]
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    loginuid: int = UNSET_LOGINUID
    tty: int = 0
    sid: int = 0
    pgid: int = 0
    vpid: int = 0
    pid_ns_depth: int = 0  # pid namespaces from /proc's own to the process's (NSpid); 0: unknown
    start_ns: int = 0  # wall clock, ns
    cgroup: CgroupIdentity = HOST_IDENTITY
    exited: bool = False
    creds: Creds | None = None  # capabilities and fs ids, as of the last exec (or fork)
    exe_image: ExeImage | None = None  # the executable's inode, as of the last exec
    exe_image_late: bool = False  # exe_image was missing at exec and looked up later

    @property
    def cmdline(self) -> str:
        """Falco's proc.cmdline: name then the arguments, space-separated."""
        return " ".join([self.comm, *self.args]) if self.args else self.comm


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _stat_fields(raw: bytes) -> tuple[str, list[bytes]] | None:
    """(comm, fields after comm) of /proc/PID/stat; comm may contain spaces and parens."""
    lpar, rpar = raw.find(b"("), raw.rfind(b")")
    if lpar < 0 or rpar < 0:
        return None
    return raw[lpar + 1:rpar].decode(errors="replace"), raw[rpar + 2:].split()


class ProcessTable:
    """pid -> Proc, with the ancestry walk the proc.a* fields need."""

    def __init__(self, proc_root: str = "/proc", max_entries: int = 65536):
        self.proc_root = proc_root
        self.max_entries = max_entries
        self._procs: dict[int, Proc] = {}
        self._tgid_of: dict[int, int] = {}  # thread id -> tgid, for threads seen in events
        self._boot_ns = self._boot_time_ns()
        self.exe_inspector = ExeInspector(proc_root)
        self.misses = 0  # lookups that had to fall back to /proc
        # told the pid of each process whose view was read from /proc in place of the
        # table's (a miss, or replace()): what was computed from the old view (the
        # detection masks, enforcer.kernel.detection_masks) is computed again
        self.on_reread: Callable[[int], None] | None = None

    # --- seeding and /proc fallback -------------------------------------------------
    def _boot_time_ns(self) -> int:
        # /proc/stat's btime is whole seconds: start times derived from it would be off by
        # up to 1 s, and the kill response compares them with /proc start ticks (exactly,
        # within a tick). Wall clock minus CLOCK_BOOTTIME is exact for the real /proc.
        if self.proc_root == "/proc":
            return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        raw = _read(f"{self.proc_root}/stat") or b""
        for line in raw.splitlines():
            if line.startswith(b"btime "):
                return int(line.split()[1]) * 1_000_000_000
        return 0

    def seed(self) -> int:
        """Load every process in /proc; returns how many were loaded."""
        count = 0
        for name in os.listdir(self.proc_root):
            if name.isdigit():
                proc = self.read_proc(int(name))
                if proc is not None:
                    self._procs[proc.pid] = proc
                    count += 1
        return count

    def read_proc(self, pid: int) -> Proc | None:
        """A Proc built from /proc/PID, or None when the process is gone."""
        base = f"{self.proc_root}/{pid}"
        stat = _read(f"{base}/stat")
        if stat is None:
            return None
        parsed = _stat_fields(stat)
        if parsed is None:
            return None
        comm, rest = parsed
        proc = Proc(pid=pid, comm=comm)
        self._apply_stat(proc, rest)
        cmdline = _read(f"{base}/cmdline") or b""
        argv = [a.decode(errors="surrogateescape") for a in cmdline.split(b"\0")[:-1]]
        if argv:
            proc.exe, proc.args = argv[0], argv[1:]
        try:
            proc.exepath = os.readlink(f"{base}/exe")
        except OSError:
            proc.exepath = ""
        try:
            proc.cwd = os.readlink(f"{base}/cwd")
        except OSError:
            pass
        status = _read(f"{base}/status") or b""
        self._apply_status(proc, status)
        proc.creds = parse_status(status)
        proc.exe_image = self.exe_inspector.capture(pid, proc.creds)
        loginuid = _read(f"{base}/loginuid")
        if loginuid and loginuid.strip().isdigit():
            proc.loginuid = int(loginuid)
        proc.cgroup = identify((_read(f"{base}/cgroup") or b"").decode(errors="replace"))
        return proc

    def _apply_stat(self, proc: Proc, rest: list[bytes]) -> None:
        # fields after comm: state ppid pgrp session tty_nr ... starttime is field 22 (idx 19)
        try:
            proc.ppid = int(rest[1])
            proc.pgid = int(rest[2])
            proc.sid = int(rest[3])
            proc.tty = int(rest[4])
            ticks = int(rest[19])
            proc.start_ns = self._boot_ns + ticks * (1_000_000_000 // os.sysconf("SC_CLK_TCK"))
        except (IndexError, ValueError):
            pass

    @staticmethod
    def _apply_status(proc: Proc, status: bytes) -> None:
        for line in status.splitlines():
            if line.startswith(b"Uid:"):
                proc.uid = int(line.split()[1])
            elif line.startswith(b"Gid:"):
                proc.gid = int(line.split()[1])
            elif line.startswith(b"NSpid:"):
                proc.vpid = int(line.split()[-1])
                proc.pid_ns_depth = len(line.split()) - 1

    def refresh_live(self, proc: Proc, cgroup: CgroupIdentity | None = None) -> None:
        """Re-read what exec may have changed and events do not carry (tty, session,
        process group, cgroup, vpid), if the process is still alive. A `cgroup` the
        caller already knows (from the record's cgroup id) spares reading and parsing
        /proc/PID/cgroup, a third of the cost per exec."""
        base = f"{self.proc_root}/{proc.pid}"
        stat = _read(f"{base}/stat")
        if stat is None:
            return
        parsed = _stat_fields(stat)
        if parsed is not None:
            ppid = proc.ppid
            self._apply_stat(proc, parsed[1])
            if proc.ppid == 0:
                proc.ppid = ppid
        if cgroup is not None:
            proc.cgroup = cgroup
        else:
            text = _read(f"{base}/cgroup")
            if text is not None:
                proc.cgroup = identify(text.decode(errors="replace"))
        status = _read(f"{base}/status")
        if status:
            for line in status.splitlines():
                if line.startswith(b"NSpid:"):
                    proc.vpid = int(line.split()[-1])
                    proc.pid_ns_depth = len(line.split()) - 1
                    break
            creds = parse_status(status)
            if creds is not None:
                proc.creds = creds

    # --- lookups ----------------------------------------------------------------------
    def get(self, pid: int) -> Proc | None:
        """The process with this pid (tgid), from the table or, failing that, /proc."""
        proc = self._procs.get(pid)
        if proc is not None:
            return proc
        tgid = self._tgid_of.get(pid)
        if tgid is not None and tgid in self._procs:
            return self._procs[tgid]
        self.misses += 1
        proc = self.read_proc(pid)
        if proc is not None:
            self._store(proc)
            if self.on_reread is not None:
                self.on_reread(proc.pid)
        return proc

    def replace(self, proc: Proc) -> None:
        """Put a process read from /proc (read_proc) in place of what the table held."""
        self._store(proc)
        if self.on_reread is not None:
            self.on_reread(proc.pid)

    def ancestors(self, proc: Proc) -> Iterator[Proc]:
        """Parent first, up to the root (bounded, loop-safe)."""
        seen = {proc.pid}
        cur = proc
        for _ in range(MAX_ANCESTORS):
            if cur.ppid <= 0 or cur.ppid in seen:
                return
            parent = self.get(cur.ppid)
            if parent is None:
                return
            yield parent
            seen.add(parent.pid)
            cur = parent

    def __len__(self) -> int:
        return len(self._procs)

    def __contains__(self, pid: int) -> bool:
        return pid in self._procs

    # --- events -----------------------------------------------------------------------
    def _store(self, proc: Proc) -> None:
        if len(self._procs) >= self.max_entries:
            self._evict()
        self._procs[proc.pid] = proc

    def _evict(self) -> None:
        exited = [pid for pid, p in self._procs.items() if p.exited]
        for pid in exited[: max(1, len(exited) // 2)]:
            del self._procs[pid]
        if len(self._procs) >= self.max_entries:  # nothing exited: drop the oldest tenth
            for pid in list(self._procs)[: self.max_entries // 10]:
                del self._procs[pid]

    def on_fork(self, parent_tgid: int, child: int, now_ns: int | None = None) -> Proc:
        """A new task: a copy of its parent's image, parent = the forking process."""
        parent = self.get(parent_tgid)
        if parent is None:
            proc = Proc(pid=child, ppid=parent_tgid)
        else:
            proc = Proc(pid=child, ppid=parent.pid, comm=parent.comm, exe=parent.exe,
                        exepath=parent.exepath, args=parent.args, cwd=parent.cwd,
                        uid=parent.uid, gid=parent.gid, loginuid=parent.loginuid,
                        tty=parent.tty, sid=parent.sid, pgid=parent.pgid,
                        cgroup=parent.cgroup, creds=parent.creds,
                        exe_image=parent.exe_image)
        proc.start_ns = now_ns if now_ns is not None else time.time_ns()
        self._store(proc)
        return proc

    def on_exec(self, pid: int, comm: str, filename: str, argv: list[str], uid: int,
                gid: int, now_ns: int | None = None,
                cgroup: CgroupIdentity | None = None) -> Proc:
        """A successful exec: new image, same process (`cgroup`: its container, when the
        record's cgroup id already says)."""
        proc = self._procs.get(pid)
        if proc is None:
            proc = self.get(pid)
            if proc is None:
                proc = Proc(pid=pid, start_ns=now_ns or 0)
                self._store(proc)
        proc.comm = comm
        proc.exe = argv[0] if argv else filename
        proc.args = argv[1:]
        proc.exepath = resolve(proc.cwd, filename) if filename else proc.exepath
        proc.uid, proc.gid = uid, gid
        proc.exited = False
        self.refresh_live(proc, cgroup)
        try:
            # the kernel's own view (symlinks resolved, memfd and fd execs named as the
            # kernel names them), while the process is still there to ask
            exe = os.readlink(f"{self.proc_root}/{pid}/exe")
        except OSError:
            exe = ""
        if exe.endswith(" (deleted)"):
            exe = exe[:-10]
        # A process that exits at once, in a container whose root is already torn down,
        # reads back as "/" — no executable at all: keep the path the exec named.
        if exe.startswith("/") and exe != "/":
            proc.exepath = exe
        # the new image's inode; an image read too late (process gone) is unknown rather
        # than the one the process had before the exec
        proc.exe_image = self.exe_inspector.capture(pid, proc.creds)
        proc.exe_image_late = False
        return proc

    def refresh_creds(self, proc: Proc) -> None:
        """Re-read the capabilities after a syscall that may have changed them (setuid
        family, capset), if the process is still alive."""
        status = _read(f"{self.proc_root}/{proc.pid}/status")
        creds = parse_status(status) if status else None
        if creds is not None:
            proc.creds = creds

    def on_exit(self, tid: int, tgid: int) -> None:
        """A task ended. The process entry is kept (marked exited) while the table has
        room, so later events of its children still find their parent's name."""
        if tid != tgid:
            self._procs.pop(tid, None)
            self._tgid_of.pop(tid, None)
            return
        proc = self._procs.get(tid)
        if proc is not None:
            proc.exited = True

    def note_thread(self, tid: int, tgid: int) -> None:
        """An event showed tid belongs to tgid: drop the task entry fork made for it."""
        if tid != tgid and tid not in self._tgid_of:
            self._tgid_of[tid] = tgid
            self._procs.pop(tid, None)

    def on_chdir(self, pid: int, path: str) -> None:
        proc = self.get(pid)
        if proc is not None and path:
            proc.cwd = resolve(proc.cwd, path)


def resolve(cwd: str, path: str) -> str:
    """An absolute, normalised path for `path` as seen from `cwd` (Falco sanitises the
    same way: `.` and `..` collapsed, duplicate slashes removed)."""
    if not path.startswith("/"):
        path = (cwd.rstrip("/") or "") + "/" + path
    norm = os.path.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm
