"""The live event: a decoded record plus the process table, container and user state,
behind `get(field)`. Fields are computed the first time a rule (or an output) reads them
and cached on the event, so an event that no rule looks at costs almost nothing."""

from __future__ import annotations

import copy
import os
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from enforcer.sources.decode import AT_FDCWD, O_DIRECTORY
from enforcer.sources.syscalls import BY_NAME  # here, not per field read: that was measurable
from enforcer.state import sockets
from enforcer.state.capabilities import cap_names
from enforcer.state.cgroup_ids import CgroupIds
from enforcer.state.cgroups import CgroupIdentity
from enforcer.state.containers import HOST_INFO, ContainerInfo, ContainerRegistry
from enforcer.state.exe_image import ExeImage
from enforcer.state.fd_table import FdTable
from enforcer.state.overlay import open_in_layer
from enforcer.state.process_table import UNSET_LOGINUID, Proc, ProcessTable, resolve
from enforcer.state.users import Names

_MISSING = object()
# fields whose value depends on the container's metadata (not just its id)
_CONTAINER_DERIVED = ("container.", "k8s.", "proc.is_exe_upper_layer", "proc.exe_ino",
                      "proc.is_exe_writable")


@dataclass
class StateContext:
    """Everything a live event may consult to resolve its fields."""

    table: ProcessTable
    containers: ContainerRegistry
    names: Names = field(default_factory=Names)
    hostname: str = field(default_factory=socket.gethostname)
    mono_to_wall_ns: int = 0  # add to bpf_ktime_get_ns() for wall-clock ns
    proc_root: str = "/proc"
    cgroup_ids: CgroupIds | None = None
    counter: int = 0
    fds: FdTable = field(default_factory=FdTable)

    @staticmethod
    def wall_offset() -> int:
        """Offset from CLOCK_MONOTONIC (what the probes stamp) to wall-clock time."""
        import time  # noqa: PLC0415

        return time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class LiveEvent:
    """An Event (see enforcer/event.py) backed by a decoded record and the state."""

    __slots__ = ("_f", "_ctx", "proc", "_anc", "_container", "_sock", "waiting_on")

    def __init__(self, fields: dict[str, Any], ctx: StateContext, proc: Proc | None):
        self._f = fields
        self._ctx = ctx
        self.proc = proc
        self._anc: list[Proc] | None = None
        self._container: ContainerInfo | None = None
        self._sock: Any = _MISSING
        # the full id of a container whose metadata this event read while still pending
        self.waiting_on: str | None = None

    def get(self, name: str, default: Any = None) -> Any:
        """The value of a Falco field, or `default` when the event does not have it."""
        value = self._f.get(name, _MISSING)
        if value is not _MISSING:
            return default if value is None else value
        fn = _RESOLVERS.get(name)
        if fn is not None:
            value = fn(self)
        elif name.endswith("]") and "[" in name:
            base, _, arg = name[:-1].partition("[")
            indexed = _INDEXED.get(base)
            value = indexed(self, arg) if indexed is not None else None
        else:
            value = None
        self._f[name] = value
        return default if value is None else value

    def fields(self) -> dict[str, Any]:
        """The fields computed so far (for debugging and the audit record)."""
        return {k: v for k, v in self._f.items() if not k.startswith("_")}

    # --- helpers ------------------------------------------------------------------------
    def ancestors(self) -> list[Proc]:
        if self._anc is None:
            self._anc = list(self._ctx.table.ancestors(self.proc)) if self.proc else []
        return self._anc

    def cgroup(self) -> CgroupIdentity | None:
        """The container identity: from the record's cgroup id, else the process table."""
        ids = self._ctx.cgroup_ids
        ident = ids.identity(self._f.get("_cgroup_id", 0)) if ids is not None else None
        if ident is None and self.proc is not None:
            ident = self.proc.cgroup
        return ident

    def container(self) -> ContainerInfo:
        info = self._container
        if info is None or info.pending:  # pending: ask again, it may have come in
            ident = self.cgroup()
            if ident is None or not ident.full_id:
                info = HOST_INFO
            else:
                info = self._ctx.containers.get(ident.full_id, ident.runtime)
                if info.pending:
                    self.waiting_on = ident.full_id
            self._container = info
        return info

    def set_aside(self) -> None:
        """Keep this event for a later evaluation: the process and its ancestors as they
        are now (later events change the table), and nothing derived from the container
        metadata that was still pending."""
        if self.proc is not None:
            self.ancestors()
            self._anc = [copy.copy(p) for p in self._anc or ()]
            self.proc = copy.copy(self.proc)
        self.forget_container()

    def forget_container(self) -> None:
        """Drop the container metadata read so far and the fields computed from it, so
        that the next read sees what the registry knows now."""
        self._container = None
        self.waiting_on = None
        for key in [k for k in self._f if k.startswith(_CONTAINER_DERIVED)]:
            del self._f[key]
        if self.proc is not None and self.proc.exe_image is None:
            self.proc.exe_image_late = False  # the upper layer may be known now

    def _cwd(self) -> str:
        return self.proc.cwd if self.proc else "/"

    def path(self, raw: str, dirfd_arg: str | None) -> str:
        """An absolute path for a path argument, resolved like the kernel would."""
        if not raw or raw.startswith("/"):
            return resolve("/", raw) if raw else raw
        base = self._cwd()
        if dirfd_arg is not None:
            dirfd = _s32(self._f.get("_ints", {}).get(dirfd_arg, AT_FDCWD))
            if dirfd != AT_FDCWD:
                target = sockets.fd_target(self._ctx.proc_root, self._f["proc.pid"], dirfd)
                if target is None or not target.startswith("/"):
                    return raw  # unknown directory: keep the raw relative path
                base = target
        return resolve(base, raw)

    def sock(self) -> sockets.SocketInfo | None:
        """The socket this event's fd names (fd arg, or the returned fd for accept): the
        fd table's entry as of the event, completed from /proc while the process lives."""
        if self._sock is _MISSING:
            entry = self._f.get("_fdent")
            info = None
            if entry is None or not entry.complete():
                fd = self._event_fd()
                if fd is not None and fd >= 0:
                    info = sockets.fd_socket(self._ctx.proc_root, self._f["proc.pid"], fd)
                if info is not None and entry is not None and entry.type not in (
                        {4: "ipv4", 6: "ipv6"}.get(info.family, "unix"),):
                    info = None  # the number was reused since: /proc is not this socket
            if info is None and entry is not None and entry.type in _SOCKET_TYPES:
                info = entry.socket_info()
            self._sock = info
        return self._sock

    def _event_fd(self) -> int | None:
        spec = BY_NAME.get(self._f.get("evt.type", ""))
        if spec is None:
            return None
        if spec.fd_arg:
            return _s32(self._f.get("_ints", {}).get(spec.fd_arg, -1))
        if spec.ret_is_fd:
            return self._f.get("evt.rawres")
        return None


_SOCKET_TYPES = frozenset({"ipv4", "ipv6", "unix"})


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


Resolver = Callable[[LiveEvent], Any]
_RESOLVERS: dict[str, Resolver] = {}
_INDEXED: dict[str, Callable[[LiveEvent, str], Any]] = {}


def _field(*names: str) -> Callable[[Resolver], Resolver]:
    def deco(fn: Resolver) -> Resolver:
        for n in names:
            _RESOLVERS[n] = fn
        return fn
    return deco


def _p(attr: str) -> Resolver:
    return lambda e: getattr(e.proc, attr) if e.proc else None


# --- evt.* -----------------------------------------------------------------------------
@_field("evt.rawtime", "evt.time")
def _time(e: LiveEvent) -> int:
    return e._f["_ts_mono"] + e._ctx.mono_to_wall_ns


@_field("evt.hostname")
def _hostname(e: LiveEvent) -> str:
    return e._ctx.hostname


@_field("evt.is_open_read")
def _is_open_read(e: LiveEvent) -> bool | None:
    flags = _open_flags(e)
    return None if flags is None else flags & 3 in (0, 2)


@_field("evt.is_open_write")
def _is_open_write(e: LiveEvent) -> bool | None:
    flags = _open_flags(e)
    return None if flags is None else flags & 3 in (1, 2)


@_field("evt.is_open_exec")
def _is_open_exec(e: LiveEvent) -> bool | None:
    flags = _open_flags(e)
    if flags is None:
        return None
    mode = e._f.get("_ints", {}).get("mode", 0)
    return bool(flags & 0o100 and mode & 0o111)


def _open_flags(e: LiveEvent) -> int | None:
    t = e._f.get("evt.type")
    if t not in ("open", "openat", "openat2", "creat"):
        return None
    ints = e._f.get("_ints", {})
    if t == "creat":
        return 0o1101  # O_WRONLY|O_CREAT|O_TRUNC
    return ints.get("how", ints.get("flags", 0))


def _id_arg(tp: str, kind: str) -> Resolver:
    """A uid or gid argument as Falco's evt.arg renders it: the name in the event's
    container's table (setuid(0) is `root`), `<NA>` when no table knows the id, `<NONE>`
    for -1; evt.rawarg has the number."""
    def fn(e: LiveEvent) -> str | None:
        value = e._f.get("_ints", {}).get(tp)
        if value is None:
            return None
        value &= 0xFFFFFFFF
        if value == 0xFFFFFFFF:
            return "<NONE>"
        names = e._ctx.names
        lookup = names.user if kind == "uid" else names.group
        return lookup(value, e.container().id, e._f["proc.pid"]) or "<NA>"
    return fn


def _raw_arg(tp: str) -> Resolver:
    return lambda e: (v & 0xFFFFFFFF) if (v := e._f.get("_ints", {}).get(tp)) is not None \
        else None


_ID_ARGS = {s.name: tuple(f"evt.arg.{a.falco}" for a in s.ints if a.fmt in ("uid", "gid"))
            for s in BY_NAME.values()}
for _s in BY_NAME.values():
    for _a in _s.ints:
        if _a.fmt in ("uid", "gid") and _a.falco:
            _RESOLVERS[f"evt.arg.{_a.falco}"] = _id_arg(_a.tp, _a.fmt)
            _RESOLVERS[f"evt.rawarg.{_a.falco}"] = _raw_arg(_a.tp)


@_field("evt.args")
def _args(e: LiveEvent) -> str:
    for name in _ID_ARGS.get(e._f.get("evt.type", ""), ()):
        e.get(name)  # named on demand: computed into the event's fields for the list below
    return " ".join(f"{k[8:]}={v}" for k, v in e._f.items()
                    if k.startswith("evt.arg.") and v is not None)


# --- proc.* / thread.* ------------------------------------------------------------------
_RESOLVERS["proc.name"] = lambda e: e.proc.comm if e.proc else e._f.get("_comm")
_RESOLVERS["proc.exe"] = _p("exe")
_RESOLVERS["proc.exepath"] = _p("exepath")
_RESOLVERS["proc.cmdline"] = lambda e: e.proc.cmdline if e.proc else None
_RESOLVERS["proc.args"] = lambda e: " ".join(e.proc.args) if e.proc else None
_RESOLVERS["proc.ppid"] = _p("ppid")
_RESOLVERS["proc.tty"] = _p("tty")
_RESOLVERS["proc.sid"] = _p("sid")
_RESOLVERS["proc.vpgid"] = _p("pgid")
_RESOLVERS["proc.vpid"] = lambda e: (e.proc.vpid or e.proc.pid) if e.proc else None
_RESOLVERS["proc.cwd"] = lambda e: (e.proc.cwd.rstrip("/") + "/") if e.proc else None
_RESOLVERS["proc.is_vpgid_leader"] = lambda e: (e.proc.pgid == e.proc.pid) if e.proc else None
_RESOLVERS["proc.is_sid_leader"] = lambda e: (e.proc.sid == e.proc.pid) if e.proc else None
_RESOLVERS["proc.is_exe_from_memfd"] = (
    lambda e: e.proc.exepath.startswith("/memfd:") if e.proc else None)


@_field("proc.is_exe_upper_layer")
def _exe_upper_layer(e: LiveEvent) -> bool | None:
    """Whether the executable lives in the container's writable overlay layer (written
    after the container started), as Falco's overlayfs check says."""
    if e.proc is None:
        return None
    info = e.container()
    if info.id == "host":
        return False
    exe = e.proc.exepath
    if not exe.startswith("/") or exe == "/":
        return None
    upper = _upper_dir(e, info)
    if not upper:
        return None
    fd = open_in_layer(upper, exe)
    if fd is None:
        return False
    try:
        return not stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _upper_dir(e: LiveEvent, info: ContainerInfo) -> str | None:
    """The container's writable layer on the host. The CRI does not say where it is: then it
    is read from this process's (or a container ancestor's) root mount, once per container."""
    return info.upper_dir or e._ctx.containers.upper_dir(info, _pids_in(e, info.full_id),
                                                         e._ctx.proc_root)


def _pids_in(e: LiveEvent, full_id: str) -> Iterator[int]:
    """The event's process, then its ancestors that are in the same container."""
    if e.proc is not None:
        yield e.proc.pid
    for anc in e.ancestors():
        if anc.cgroup.full_id != full_id:
            return
        yield anc.pid


# Exec-time facts (see enforcer/state/exe_image.py); like Falco, an inode number or time
# of 0 means "unknown" and the field is absent.
def exe_image(e: LiveEvent) -> ExeImage | None:
    """The executable's image as read at exec. A process that exited before the tracker
    saw its exec (a dropped binary that runs for a millisecond) has none; when its file
    is in its container's upper layer, which outlives it, that file is read instead, once
    per process."""
    proc = e.proc
    if proc is None:
        return None
    if proc.exe_image is None and not proc.exe_image_late:
        proc.exe_image_late = True
        info = e.container()
        upper = _upper_dir(e, info) if info.id != "host" else None
        exe = proc.exepath
        if upper and exe.startswith("/") and exe != "/":
            fd = open_in_layer(upper, exe)
            if fd is not None:
                try:  # the file itself, never where a link in the layer points
                    proc.exe_image = e._ctx.table.exe_inspector.image_of(
                        f"/proc/self/fd/{fd}", proc.pid, proc.creds)
                finally:
                    os.close(fd)
    return proc.exe_image


def _image(attr: str) -> Resolver:
    def fn(e: LiveEvent) -> Any:
        image = exe_image(e)
        return (getattr(image, attr) or None) if image is not None else None
    return fn


_RESOLVERS["proc.exe_ino"] = _image("ino")
_RESOLVERS["proc.exe_ino.ctime"] = _image("ctime_ns")
_RESOLVERS["proc.exe_ino.mtime"] = _image("mtime_ns")
_RESOLVERS["proc.is_exe_writable"] = lambda e: (
    image.writable if (image := exe_image(e)) is not None else None)


@_field("proc.exe_ino.ctime_duration_proc_start")
def _ctime_to_start(e: LiveEvent) -> int | None:
    """Process start minus the executable's ctime, as Falco computes it: an unsigned
    64-bit difference (a file changed after the process started wraps around)."""
    image = exe_image(e)
    if image is None or not image.ctime_ns or not e.proc or not e.proc.start_ns:
        return None
    return ((e.proc.start_ns - image.ctime_ns) & 0xFFFFFFFFFFFFFFFF) or None


def _caps(attr: str) -> Resolver:
    def fn(e: LiveEvent) -> str | None:
        creds = e.proc.creds if e.proc else None
        return cap_names(getattr(creds, attr)) if creds is not None else None
    return fn


_RESOLVERS["thread.cap_effective"] = _caps("cap_effective")
_RESOLVERS["thread.cap_permitted"] = _caps("cap_permitted")
_RESOLVERS["thread.cap_inheritable"] = _caps("cap_inheritable")


def _lookup_pid(e: LiveEvent, pid: int) -> Proc | None:
    return e._ctx.table.get(pid) if pid > 0 else None


_RESOLVERS["proc.sname"] = lambda e: (
    p.comm if e.proc and (p := _lookup_pid(e, e.proc.sid)) else None)
_RESOLVERS["proc.vpgid.name"] = lambda e: (
    p.comm if e.proc and (p := _lookup_pid(e, e.proc.pgid)) else None)
_RESOLVERS["proc.vpgid.exe"] = lambda e: (
    p.exe if e.proc and (p := _lookup_pid(e, e.proc.pgid)) else None)


@_field("proc.pid.ts")
def _pid_ts(e: LiveEvent) -> int | None:
    return e.proc.start_ns if e.proc and e.proc.start_ns else None


@_field("proc.duration")
def _duration(e: LiveEvent) -> int | None:
    if not e.proc or not e.proc.start_ns:
        return None
    return max(0, _time(e) - e.proc.start_ns)


@_field("proc.ppid.duration")
def _pduration(e: LiveEvent) -> int | None:
    anc = e.ancestors()
    if not anc or not anc[0].start_ns:
        return None
    return max(0, _time(e) - anc[0].start_ns)


@_field("proc.env")
def _env(e: LiveEvent) -> str | None:
    try:
        with open(f"{e._ctx.proc_root}/{e._f['proc.pid']}/environ", "rb") as fh:
            return " ".join(x.decode(errors="replace") for x in fh.read().split(b"\0") if x)
    except OSError:
        return None


def _parent(attr: Callable[[Proc], Any]) -> Resolver:
    def fn(e: LiveEvent) -> Any:
        anc = e.ancestors()
        return attr(anc[0]) if anc else None
    return fn


_RESOLVERS["proc.pname"] = _parent(lambda p: p.comm)
_RESOLVERS["proc.pcmdline"] = _parent(lambda p: p.cmdline)
_RESOLVERS["proc.pexe"] = _parent(lambda p: p.exe)
_RESOLVERS["proc.pexepath"] = _parent(lambda p: p.exepath)


def _chain(attr: Callable[[Proc], Any]) -> Resolver:
    return lambda e: [attr(p) for p in e.ancestors()]


_RESOLVERS["proc.aname"] = _chain(lambda p: p.comm)
_RESOLVERS["proc.apid"] = _chain(lambda p: p.pid)
_RESOLVERS["proc.aexepath"] = _chain(lambda p: p.exepath)
_RESOLVERS["proc.aexe"] = _chain(lambda p: p.exe)
_RESOLVERS["proc.acmdline"] = _chain(lambda p: p.cmdline)


def _indexed(attr: Callable[[Proc], Any]) -> Callable[[LiveEvent, str], Any]:
    def fn(e: LiveEvent, arg: str) -> Any:
        if not arg.isdigit():
            return None
        n = int(arg)
        if n == 0:
            return attr(e.proc) if e.proc else None
        anc = e.ancestors()
        return attr(anc[n - 1]) if n <= len(anc) else None
    return fn


_INDEXED["proc.aname"] = _indexed(lambda p: p.comm)
_INDEXED["proc.apid"] = _indexed(lambda p: p.pid)
_INDEXED["proc.aexepath"] = _indexed(lambda p: p.exepath)
_INDEXED["proc.aexe"] = _indexed(lambda p: p.exe)
_INDEXED["proc.acmdline"] = _indexed(lambda p: p.cmdline)

# --- user.* / group.* -------------------------------------------------------------------
_RESOLVERS["user.name"] = lambda e: e._ctx.names.user(
    e._f["user.uid"], e.container().id, e._f["proc.pid"])
_RESOLVERS["group.name"] = lambda e: e._ctx.names.group(
    e._f["group.gid"], e.container().id, e._f["proc.pid"])


@_field("user.loginuid")
def _loginuid(e: LiveEvent) -> int | None:
    if not e.proc:
        return None
    return -1 if e.proc.loginuid == UNSET_LOGINUID else e.proc.loginuid


@_field("user.loginname")
def _loginname(e: LiveEvent) -> str | None:
    uid = _loginuid(e)
    if uid is None or uid < 0:
        return None
    return e._ctx.names.user(uid)


# --- container.* / k8s.* ----------------------------------------------------------------
_RESOLVERS["container.id"] = lambda e: e.container().id
_RESOLVERS["container.full_id"] = lambda e: e.container().full_id or "host"
_RESOLVERS["container.name"] = lambda e: e.container().name
_RESOLVERS["container.image"] = lambda e: e.container().image
_RESOLVERS["container.image.repository"] = lambda e: e.container().image_repository
_RESOLVERS["container.image.tag"] = lambda e: e.container().image_tag
_RESOLVERS["container.image.id"] = lambda e: e.container().image_id
_RESOLVERS["container.privileged"] = lambda e: (
    None if e.container().id == "host" else e.container().privileged)
_RESOLVERS["container.start_ts"] = lambda e: e.container().start_ts
_RESOLVERS["container.type"] = lambda e: e.container().runtime
_RESOLVERS["container.mounts"] = lambda e: ",".join(
    f"{m['source']}:{m['dest']}:{m['mode']}:{str(m['rw']).lower()}:{m['propagation']}"
    for m in e.container().mounts) or None
_RESOLVERS["k8s.pod.name"] = lambda e: e.container().k8s_pod_name
_RESOLVERS["k8s.ns.name"] = lambda e: e.container().k8s_ns_name
_RESOLVERS["k8s.pod.uid"] = lambda e: e.container().k8s_pod_uid or (
    ident.pod_uid if (ident := e.cgroup()) else None)
_RESOLVERS["k8s.pod.labels"] = lambda e: ", ".join(
    f"{k}:{v}" for k, v in sorted(e.container().k8s_pod_labels.items())) or None


def _mount_by(key: str, value: str) -> Callable[[LiveEvent, str], Any]:
    """Falco's container.mount.<value>[ARG]: ARG is a mount's index, or a glob matched
    against the other end of the mount (`*` crosses `/`, as libsinsp's fnmatch without
    FNM_PATHNAME): container.mount.dest[/proc*] is where a mount of /proc... lands."""
    def resolve_mount(e: LiveEvent, arg: str) -> Any:
        mounts = e.container().mounts
        if arg.isdigit():
            return mounts[int(arg)][value] if int(arg) < len(mounts) else None
        return next((m[value] for m in mounts if fnmatchcase(m[key], arg)), None)
    return resolve_mount


_INDEXED["container.mount.dest"] = _mount_by("source", "dest")
_INDEXED["container.mount.source"] = _mount_by("dest", "source")
_INDEXED["k8s.pod.label"] = lambda e, arg: e.container().k8s_pod_labels.get(arg)

# --- fd.* -------------------------------------------------------------------------------
_FAMILY = {"ipv4": ("4", "ipv4"), "ipv6": ("6", "ipv6"), "unix": ("u", "unix")}


def _spec(e: LiveEvent) -> Any:
    return BY_NAME.get(e._f.get("evt.type", ""))


@_field("fd.name")
def _fd_name(e: LiveEvent) -> str | None:
    spec = _spec(e)
    if spec is None:
        return None
    if spec.family == "open" or spec.name == "memfd_create":
        raw = e._f.get("_s1")
        if raw is None:
            return None
        if spec.name == "memfd_create":
            return f"memfd:{raw}"
        return e.path(raw, spec.dirfd1)
    sa = e._f.get("_sockaddr")
    if spec.family == "net":
        return _net_name(e, sa)
    entry = e._f.get("_fdent")
    if entry is not None and entry.type in _SOCKET_TYPES:
        return _net_name(e, None)
    if entry is not None and entry.type == "pipe":
        return ""  # libsinsp names a pipe made by pipe/pipe2 nothing
    fd = e._event_fd()
    if fd is not None and fd >= 0:
        target = sockets.fd_target(e._ctx.proc_root, e._f["proc.pid"], fd)
        if target and target.startswith("/"):
            return target
        if target and target.startswith("socket:"):
            return _net_name(e, None)
    return None


def _endpoints(e: LiveEvent) -> dict[str, Any] | None:
    """{cip, cport, sip, sport, lip, lport, rip, rport, family, unix_path} for a net event.

    The remote end comes from the syscall's own sockaddr; the local end (and a remote the
    syscall did not name) from /proc, read only when such a field is asked for.
    """
    key = "_endpoints"
    if key in e._f:
        return e._f[key]
    spec = _spec(e)
    sa = e._f.get("_sockaddr")
    out: dict[str, Any] | None = None
    if spec is not None and spec.family == "net":
        out = _LazyEndpoints(e, spec.name, sa)
        if sa is None and e.sock() is None:
            out = None
    elif spec is not None and e.sock() is not None:
        # a socket named by another syscall (dup, fcntl, fchmod...): the ends as the
        # socket has them, its role as the syscall that made it says
        entry = e._f.get("_fdent")
        out = _LazyEndpoints(e, "accept" if entry is not None and entry.server else "socket",
                             None)
    e._f[key] = out
    return out


class _LazyEndpoints(dict):  # type: ignore[type-arg]
    """A dict whose local-side values are looked up in /proc on first access."""

    _LOCAL = frozenset({"lip", "lport", "l4proto"})

    def __init__(self, e: LiveEvent, syscall: str, sa: dict[str, Any] | None):
        super().__init__()
        self._e = e
        self._syscall = syscall
        self._sa = sa
        self["family"] = sa.get("family") if sa else None
        self["unix_path"] = sa.get("path") if sa else None
        self._filled = False

    def _fill(self) -> None:
        self._filled = True
        info = self._e.sock()
        sa = self._sa
        if self["family"] is None and info is not None:
            self["family"] = {4: "ipv4", 6: "ipv6", 0: "unix"}.get(info.family)
        local = (info.lip, info.lport) if info else (None, None)
        remote = (sa["ip"], sa["port"]) if sa and "ip" in sa else (
            (info.rip, info.rport) if info else (None, None))
        entry = self._e._f.get("_fdent")
        syscall = self._syscall
        if entry is not None and syscall in ("sendto", "sendmsg", "recvfrom", "recvmsg"):
            # the socket's role, not the direction of this one message
            syscall = "accept" if entry.server else "connect"
        if syscall in ("accept", "accept4", "recvfrom", "recvmsg"):
            client, server = remote, local
        elif syscall in ("bind", "listen"):
            server = (sa["ip"], sa["port"]) if sa and "ip" in sa else local
            client, remote, local = (None, None), (None, None), server
        else:  # connect, sendto, sendmsg, socket: this process is the client
            client, server = local, remote
        self.update(cip=client[0], cport=client[1], sip=server[0], sport=server[1],
                    lip=local[0], lport=local[1], rip=remote[0], rport=remote[1],
                    l4proto=info.l4proto if info else None)

    def _remote_only(self) -> bool:
        sa = self._sa
        return bool(sa and "ip" in sa and self._syscall in ("connect", "sendto", "sendmsg"))

    def get(self, k: str, default: Any = None) -> Any:
        if not self._filled and k not in ("family", "unix_path"):
            if self._remote_only() and k in ("sip", "sport", "rip", "rport"):
                return self._sa["ip" if k in ("sip", "rip") else "port"]
            self._fill()
        return super().get(k, default)

    def __getitem__(self, k: str) -> Any:
        return self.get(k)


def _net_name(e: LiveEvent, _sa: Any) -> str | None:
    ep = _endpoints(e)
    if not ep:
        return None
    if ep.get("family") == "unix":
        return ep.get("unix_path") or None
    if ep["cip"] is None and ep["sip"] is None:
        return None

    def part(ip: Any, port: Any) -> str:
        if ip is None:
            return ""
        return f"{ip}:{port}" if port is not None else str(ip)

    if ep["cip"] is None:
        return part(ep["sip"], ep["sport"])
    return f"{part(ep['cip'], ep['cport'])}->{part(ep['sip'], ep['sport'])}"


def _ep(key: str) -> Resolver:
    def fn(e: LiveEvent) -> Any:
        ep = _endpoints(e)
        return ep.get(key) if ep else None
    return fn


for _k in ("cip", "cport", "sip", "sport", "lip", "lport", "rip", "rport", "l4proto"):
    _RESOLVERS[f"fd.{_k}"] = _ep(_k)
# net fields give the address; the rules engine matches them against CIDRs
_RESOLVERS["fd.cnet"] = _ep("cip")
_RESOLVERS["fd.snet"] = _ep("sip")
_RESOLVERS["fd.lnet"] = _ep("lip")
_RESOLVERS["fd.rnet"] = _ep("rip")


@_field("fd.ip", "fd.net")
def _fd_ip(e: LiveEvent) -> Any:
    ep = _endpoints(e)
    if not ep:
        return None
    return ep["sip"] or ep["cip"]


@_field("fd.port")
def _fd_port(e: LiveEvent) -> Any:
    ep = _endpoints(e)
    return (ep["sport"] if ep["sport"] is not None else ep["cport"]) if ep else None


_TYPECHAR = {"file": "f", "directory": "d", "ipv4": "4", "ipv6": "6", "unix": "u",
             "pipe": "p", "event": "e", "signalfd": "s", "eventpoll": "l", "inotify": "i",
             "timerfd": "t", "netlink": "n", "bpf": "b", "userfaultfd": "u", "memfd": "m"}


@_field("fd.typechar")
def _typechar(e: LiveEvent) -> str | None:
    t = _fd_type(e)
    return _TYPECHAR.get(t) if t else None  # a constant: a display here cost every open


@_field("fd.type")
def _fd_type(e: LiveEvent) -> str | None:
    spec = _spec(e)
    if spec is None:
        return None
    if spec.family == "open":
        flags = _open_flags(e) or 0
        return "directory" if flags & O_DIRECTORY else "file"
    if spec.name == "memfd_create":
        return "memfd"
    if spec.family == "net":
        ep = _endpoints(e)
        if ep is not None and ep.get("family") is None:
            ep.get("lip")  # the family of an unnamed socket comes from /proc
        family = ep.get("family") if ep is not None else None
        return family if family in _FAMILY else None
    entry = e._f.get("_fdent")
    if entry is not None:
        return entry.type
    fd = e._f.get("evt.rawres") if spec.name.startswith("dup") else e._event_fd()
    if fd is None or fd < 0:
        return None
    return sockets.fd_type_of(e._ctx.proc_root, e._f["proc.pid"], fd)


@_field("fd.sockfamily")
def _sockfamily(e: LiveEvent) -> str | None:
    t = _fd_type(e)
    return {"ipv4": "ip", "ipv6": "ip", "unix": "unix"}.get(t) if t else None


@_field("fd.num")
def _fd_num(e: LiveEvent) -> int | None:
    spec = _spec(e)
    if spec is None:
        return None
    if spec.ret_is_fd:
        res = e._f.get("evt.rawres", -1)
        return res if res >= 0 else -1
    return e._event_fd()


@_field("fd.nameraw")
def _nameraw(e: LiveEvent) -> str | None:
    spec = _spec(e)
    if spec is not None and spec.family == "open":
        return e._f.get("_s1")
    return _fd_name(e)


@_field("fd.directory")
def _fd_dir(e: LiveEvent) -> str | None:
    name = _fd_name(e)
    if not name or not name.startswith("/"):
        return None
    return os.path.dirname(name) or "/"


@_field("fd.filename")
def _fd_filename(e: LiveEvent) -> str | None:
    name = _fd_name(e)
    if not name or not name.startswith("/"):
        return None
    return os.path.basename(name)


@_field("fd.connected")
def _connected(e: LiveEvent) -> bool | None:
    info = e.sock()
    return bool(info.rport) if info else None


@_field("fd.name_changed")
def _name_changed(e: LiveEvent) -> bool | None:
    # a sendto/sendmsg with an explicit address names a peer the socket did not have
    if e._f.get("evt.type") in ("sendto", "sendmsg"):
        return e._f.get("_sockaddr") is not None
    return None


def _path_field(raw_key: str, dirfd_attr: str) -> Resolver:
    def fn(e: LiveEvent) -> Any:
        spec = _spec(e)
        raw = e._f.get(raw_key)
        if spec is None or raw is None:
            return None
        return e.path(raw, getattr(spec, dirfd_attr))
    return fn


# fs.path.* (newer Falco): the paths of file-system syscalls, resolved
_RESOLVERS["fs.path.name"] = _path_field("_s1", "dirfd1")
_RESOLVERS["fs.path.source"] = _path_field("_s1", "dirfd1")
_RESOLVERS["fs.path.target"] = _path_field("_s2", "dirfd2")
