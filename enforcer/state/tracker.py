"""Applies decoded records to the process table and wraps them as live events."""

from __future__ import annotations

from typing import Any

from enforcer.sources import syscalls as sc
from enforcer.state.fd_table import FdTable
from enforcer.state.live_event import LiveEvent, StateContext

_CRED = frozenset(s.name for s in sc.SYSCALLS if s.family == "cred")
# syscalls whose event names a descriptor that may be a socket the fd table holds
_FD_EVENTS = frozenset(s.name for s in sc.SYSCALLS if s.fd_arg and s.name not in sc.FD_STATE)


class Tracker:
    """fork/exec/exit/chdir keep the table; every syscall record becomes a LiveEvent."""

    def __init__(self, ctx: StateContext):
        self.ctx = ctx
        self.table = ctx.table
        self.fds: FdTable = ctx.fds

    def apply(self, f: dict[str, Any]) -> LiveEvent | None:
        """Update the state with one decoded record; the event rules should see, if any."""
        code = f["_code"]
        pid = f["proc.pid"]
        tid = f["thread.tid"]
        wall = f["_ts_mono"] + self.ctx.mono_to_wall_ns
        if code == sc.EV_FORK:
            parent = self.table.get(pid)
            comm = f.get("_comm")
            if parent is not None and comm and parent.comm != comm:
                parent.comm = comm  # renamed itself (prctl): the child has this name too
            self.table.on_fork(pid, f["_child"], wall)
            self.fds.on_fork(pid, f["_child"])
            return None
        if code == sc.EV_EXIT:
            self.table.on_exit(tid, pid)
            if tid == pid:
                self.fds.on_exit(pid)
            else:  # a thread: what fork copied for it, not knowing, goes
                self.fds.on_thread(tid)
            return None
        if tid != pid:
            self.table.note_thread(tid, pid)
            self.fds.on_thread(tid)
        etype = f.get("evt.type")
        if etype in sc.FD_STATE:
            f["_fdent"] = self.fds.apply(f)
        elif etype in _FD_EVENTS:
            f["_fdent"] = self.fds.get(pid, _s32(f["_ints"].get(sc.BY_NAME[etype].fd_arg, -1)))
        if etype in ("execve", "execveat"):
            self.fds.on_exec(pid)
            ids = self.ctx.cgroup_ids
            known = ids.identity(f.get("_cgroup_id", 0)) if ids is not None else None
            proc = self.table.on_exec(pid, f["_comm"], f.get("_s1", ""), f.get("_argv", []),
                                      f["user.uid"], f["group.gid"], wall, known)
        else:
            proc = self.table.get(pid)
            comm = f["_comm"]
            if proc is not None and comm and proc.comm != comm:
                proc.comm = comm  # renamed itself (prctl), or busybox re-exec'd as an applet
            if etype in _CRED and proc is not None and f.get("evt.rawres") == 0:
                self.table.refresh_creds(proc)  # the capability sets follow the uids
            if etype in ("chdir", "fchdir") and f.get("evt.rawres") == 0 and proc is not None:
                event = LiveEvent(f, self.ctx, proc)
                path = (f.get("_s1") if etype == "chdir" else event.get("fd.name"))
                if path:
                    self.table.on_chdir(pid, path)
        self.ctx.counter += 1
        f["evt.num"] = self.ctx.counter
        event = LiveEvent(f, self.ctx, proc)
        if proc is not None and etype in ("execve", "execveat"):
            ident = event.cgroup()
            if ident is not None:
                proc.cgroup = ident  # children inherit it at fork
        return event


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v
