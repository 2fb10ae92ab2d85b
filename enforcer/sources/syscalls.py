"""The syscalls the eBPF source can watch: tracepoint argument names, where each argument
lands in the fixed-size record, and the Falco argument name and format it decodes to.

This table drives both code generation (enforcer.sources.probe.render) and decoding
(enforcer.sources.decode), so the two cannot disagree about a record's layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Event codes outside the syscall table: the process lifecycle, always attached.
EV_FORK = 1
EV_EXIT = 2
FIRST_SYSCALL_CODE = 10


@dataclass(frozen=True)
class IntArg:
    """A scalar tracepoint argument stored in record slot a[i] (in declaration order)."""

    tp: str  # tracepoint argument name
    falco: str | None  # Falco's argument name (None: kept only for the exit handler)
    fmt: str = "int"  # how decode renders it: int, fd, oflags, mode, uid, gid, ptrace, ...


@dataclass(frozen=True)
class Syscall:
    """One watched syscall: its tracepoint arguments and how they are captured."""

    name: str
    family: str  # open, exec, net, file, cred, proc, other
    ints: tuple[IntArg, ...] = ()
    s1: tuple[str, str] | None = None  # (tracepoint arg, Falco arg name) -> path1
    s2: tuple[str, str] | None = None  # -> path2
    dirfd1: str | None = None  # tracepoint arg holding the dirfd that s1 is relative to
    dirfd2: str | None = None
    argv: str | None = None  # exec: tracepoint arg of the argv array
    saddr: tuple[str, str] | None = None  # (ptr, len) read at enter
    saddr_exit: tuple[str, str] | None = None  # (ptr, len pointer) read at exit
    msghdr: str | None = None  # sendmsg: msghdr read at enter
    msghdr_exit: str | None = None  # recvmsg: msghdr read at exit
    open_how: bool = False  # openat2: flags come from struct open_how
    ret: str = "res"  # Falco's name for the return value (fd or res)
    ret_is_fd: bool = False
    fd_arg: str | None = None  # tracepoint arg naming the fd the event is about
    extra: dict[str, str] = field(default_factory=dict)


def _i(tp: str, falco: str | None = None, fmt: str = "int") -> IntArg:
    return IntArg(tp, falco if falco is not None else tp, fmt)


def _ptr(tp: str) -> IntArg:
    return IntArg(tp, None, "ptr")


SYSCALLS: tuple[Syscall, ...] = (
    # exec family: argv read at enter, emitted at exit only when the exec succeeded
    Syscall("execve", "exec", s1=("filename", "filename"), argv="argv"),
    Syscall("execveat", "exec", ints=(_i("fd", "dirfd", "fd"), _i("flags")),
            s1=("filename", "filename"), dirfd1="fd", argv="argv"),
    # open family
    Syscall("open", "open", ints=(_i("flags", "flags", "oflags"), _i("mode", "mode", "octal")),
            s1=("filename", "name"), ret="fd", ret_is_fd=True),
    Syscall("openat", "open", ints=(_i("dfd", "dirfd", "fd"), _i("flags", "flags", "oflags"),
                                    _i("mode", "mode", "octal")),
            s1=("filename", "name"), dirfd1="dfd", ret="fd", ret_is_fd=True),
    Syscall("openat2", "open", ints=(_i("dfd", "dirfd", "fd"), _ptr("how")),
            s1=("filename", "name"), dirfd1="dfd", open_how=True, ret="fd", ret_is_fd=True),
    Syscall("creat", "open", ints=(_i("mode", "mode", "octal"),),
            s1=("pathname", "name"), ret="fd", ret_is_fd=True),
    # network
    Syscall("socket", "net", ints=(_i("family", "domain", "af"), _i("type", "type", "socktype"),
                                   _i("protocol", "proto")), ret="fd", ret_is_fd=True),
    Syscall("connect", "net", ints=(_i("fd", "fd", "fd"), _ptr("uservaddr"), _i("addrlen", None)),
            saddr=("uservaddr", "addrlen"), fd_arg="fd"),
    Syscall("bind", "net", ints=(_i("fd", "fd", "fd"), _ptr("umyaddr"), _i("addrlen", None)),
            saddr=("umyaddr", "addrlen"), fd_arg="fd"),
    Syscall("listen", "net", ints=(_i("fd", "fd", "fd"), _i("backlog")), fd_arg="fd"),
    Syscall("accept", "net", ints=(_i("fd", None, "fd"), _ptr("upeer_sockaddr"),
                                   _ptr("upeer_addrlen")),
            saddr_exit=("upeer_sockaddr", "upeer_addrlen"), ret="fd", ret_is_fd=True),
    Syscall("accept4", "net", ints=(_i("fd", None, "fd"), _ptr("upeer_sockaddr"),
                                    _ptr("upeer_addrlen"), _i("flags")),
            saddr_exit=("upeer_sockaddr", "upeer_addrlen"), ret="fd", ret_is_fd=True),
    Syscall("sendto", "net", ints=(_i("fd", "fd", "fd"), _i("len", "size"), _ptr("addr"),
                                   _i("addr_len", None)),
            saddr=("addr", "addr_len"), fd_arg="fd"),
    Syscall("sendmsg", "net", ints=(_i("fd", "fd", "fd"), _ptr("msg")), msghdr="msg",
            fd_arg="fd"),
    Syscall("recvfrom", "net", ints=(_i("fd", "fd", "fd"), _i("size"), _ptr("addr"),
                                     _ptr("addr_len")),
            saddr_exit=("addr", "addr_len"), fd_arg="fd"),
    Syscall("recvmsg", "net", ints=(_i("fd", "fd", "fd"), _ptr("msg")), msghdr_exit="msg",
            fd_arg="fd"),
    # the kernel writes the two new fds to usockvec: the exit handler reads them (slot 4)
    Syscall("socketpair", "net", ints=(_i("family", "domain", "af"),
                                       _i("type", "type", "socktype"), _i("protocol", "proto"),
                                       _ptr("usockvec"))),
    # credentials
    Syscall("setuid", "cred", ints=(_i("uid", "uid", "uid"),)),
    Syscall("setgid", "cred", ints=(_i("gid", "gid", "gid"),)),
    Syscall("setreuid", "cred", ints=(_i("ruid", "ruid", "uid"), _i("euid", "euid", "uid"))),
    Syscall("setregid", "cred", ints=(_i("rgid", "rgid", "gid"), _i("egid", "egid", "gid"))),
    Syscall("setresuid", "cred", ints=(_i("ruid", "ruid", "uid"), _i("euid", "euid", "uid"),
                                       _i("suid", "suid", "uid"))),
    Syscall("setresgid", "cred", ints=(_i("rgid", "rgid", "gid"), _i("egid", "egid", "gid"),
                                       _i("sgid", "sgid", "gid"))),
    # files
    Syscall("unlink", "file", s1=("pathname", "path")),
    Syscall("unlinkat", "file", ints=(_i("dfd", "dirfd", "fd"), _i("flag", "flags")),
            s1=("pathname", "name"), dirfd1="dfd"),
    Syscall("rmdir", "file", s1=("pathname", "path")),
    Syscall("rename", "file", s1=("oldname", "oldpath"), s2=("newname", "newpath")),
    Syscall("renameat", "file", ints=(_i("olddfd", "olddirfd", "fd"),
                                      _i("newdfd", "newdirfd", "fd")),
            s1=("oldname", "oldpath"), s2=("newname", "newpath"), dirfd1="olddfd",
            dirfd2="newdfd"),
    Syscall("renameat2", "file", ints=(_i("olddfd", "olddirfd", "fd"),
                                       _i("newdfd", "newdirfd", "fd"), _i("flags")),
            s1=("oldname", "oldpath"), s2=("newname", "newpath"), dirfd1="olddfd",
            dirfd2="newdfd"),
    Syscall("chmod", "file", ints=(_i("mode", "mode", "mode"),), s1=("filename", "filename")),
    Syscall("fchmod", "file", ints=(_i("fd", "fd", "fd"), _i("mode", "mode", "mode")),
            fd_arg="fd"),
    Syscall("fchmodat", "file", ints=(_i("dfd", "dirfd", "fd"), _i("mode", "mode", "mode")),
            s1=("filename", "filename"), dirfd1="dfd"),
    Syscall("mkdir", "file", ints=(_i("mode", "mode", "octal"),), s1=("pathname", "path")),
    Syscall("mkdirat", "file", ints=(_i("dfd", "dirfd", "fd"), _i("mode", "mode", "octal")),
            s1=("pathname", "path"), dirfd1="dfd"),
    Syscall("symlink", "file", s1=("oldname", "target"), s2=("newname", "linkpath")),
    Syscall("symlinkat", "file", ints=(_i("newdfd", "linkdirfd", "fd"),),
            s1=("oldname", "target"), s2=("newname", "linkpath"), dirfd2="newdfd"),
    Syscall("link", "file", s1=("oldname", "oldpath"), s2=("newname", "newpath")),
    Syscall("linkat", "file", ints=(_i("olddfd", "olddir", "fd"), _i("newdfd", "newdir", "fd"),
                                    _i("flags")),
            s1=("oldname", "oldpath"), s2=("newname", "newpath"), dirfd1="olddfd",
            dirfd2="newdfd"),
    Syscall("chdir", "proc", s1=("filename", "path")),
    Syscall("fchdir", "proc", ints=(_i("fd", "fd", "fd"),), fd_arg="fd"),
    Syscall("dup", "file", ints=(_i("fildes", "fd", "fd"),), fd_arg="fildes",
            ret="res", ret_is_fd=True),
    Syscall("dup2", "file", ints=(_i("oldfd", "oldfd", "fd"), _i("newfd", "newfd", "fd")),
            fd_arg="oldfd", ret_is_fd=True),
    Syscall("dup3", "file", ints=(_i("oldfd", "oldfd", "fd"), _i("newfd", "newfd", "fd"),
                                  _i("flags")),
            fd_arg="oldfd", ret_is_fd=True),
    Syscall("fcntl", "file", ints=(_i("fd", "fd", "fd"), _i("cmd", "cmd", "fcntl"), _i("arg")),
            fd_arg="fd"),
    Syscall("close", "file", ints=(_i("fd", "fd", "fd"),), fd_arg="fd"),
    Syscall("close_range", "file", ints=(_i("fd", "fd", "fd"), _i("max_fd", "max_fd"),
                                         _i("flags"))),
    Syscall("memfd_create", "file", ints=(_i("flags"),), s1=("uname", "name"), ret="fd",
            ret_is_fd=True),
    # processes, kernel, namespaces
    Syscall("ptrace", "proc", ints=(_i("request", "request", "ptrace"), _i("pid"))),
    Syscall("init_module", "other", ints=(_i("len"),)),
    Syscall("finit_module", "other", ints=(_i("fd", "fd", "fd"), _i("flags"))),
    Syscall("mount", "other", ints=(_i("flags"),), s1=("dev_name", "dev"), s2=("dir_name", "dir")),
    Syscall("umount2", "other", ints=(_i("flags"),), s1=("name", "name")),
    Syscall("setns", "other", ints=(_i("fd", "fd", "fd"), _i("flags", "nstype"))),
    Syscall("unshare", "other", ints=(_i("unshare_flags", "flags"),)),
    Syscall("bpf", "other", ints=(_i("cmd", "cmd", "bpfcmd"),), ret="res_or_fd"),
    Syscall("userfaultfd", "other", ints=(_i("flags"),)),
    Syscall("kill", "proc", ints=(_i("pid"), _i("sig"))),
    # the kernel writes the two new fds to fildes: the exit handler reads them (slot 4),
    # as socketpair's; at the end of the table so that earlier codes do not move
    Syscall("pipe", "file", ints=(_ptr("fildes"),)),
    Syscall("pipe2", "file", ints=(_ptr("fildes"), _i("flags", "flags", "int"))),
)

# Each syscall's arguments in call order, by their tracepoint names (the kernel's
# SYSCALL_DEFINE signature): where an exit handler finds them in the saved registers.
# A system test compares this with the tracepoint formats of the running kernel.
ARG_ORDER: dict[str, tuple[str, ...]] = {
    "execve": ("filename", "argv", "envp"),
    "execveat": ("fd", "filename", "argv", "envp", "flags"),
    "open": ("filename", "flags", "mode"),
    "openat": ("dfd", "filename", "flags", "mode"),
    "openat2": ("dfd", "filename", "how", "usize"),
    "creat": ("pathname", "mode"),
    "socket": ("family", "type", "protocol"),
    "connect": ("fd", "uservaddr", "addrlen"),
    "bind": ("fd", "umyaddr", "addrlen"),
    "listen": ("fd", "backlog"),
    "accept": ("fd", "upeer_sockaddr", "upeer_addrlen"),
    "accept4": ("fd", "upeer_sockaddr", "upeer_addrlen", "flags"),
    "sendto": ("fd", "buff", "len", "flags", "addr", "addr_len"),
    "sendmsg": ("fd", "msg", "flags"),
    "recvfrom": ("fd", "ubuf", "size", "flags", "addr", "addr_len"),
    "recvmsg": ("fd", "msg", "flags"),
    "socketpair": ("family", "type", "protocol", "usockvec"),
    "setuid": ("uid",),
    "setgid": ("gid",),
    "setreuid": ("ruid", "euid"),
    "setregid": ("rgid", "egid"),
    "setresuid": ("ruid", "euid", "suid"),
    "setresgid": ("rgid", "egid", "sgid"),
    "unlink": ("pathname",),
    "unlinkat": ("dfd", "pathname", "flag"),
    "rmdir": ("pathname",),
    "rename": ("oldname", "newname"),
    "renameat": ("olddfd", "oldname", "newdfd", "newname"),
    "renameat2": ("olddfd", "oldname", "newdfd", "newname", "flags"),
    "chmod": ("filename", "mode"),
    "fchmod": ("fd", "mode"),
    "fchmodat": ("dfd", "filename", "mode"),
    "mkdir": ("pathname", "mode"),
    "mkdirat": ("dfd", "pathname", "mode"),
    "symlink": ("oldname", "newname"),
    "symlinkat": ("oldname", "newdfd", "newname"),
    "link": ("oldname", "newname"),
    "linkat": ("olddfd", "oldname", "newdfd", "newname", "flags"),
    "chdir": ("filename",),
    "fchdir": ("fd",),
    "dup": ("fildes",),
    "dup2": ("oldfd", "newfd"),
    "dup3": ("oldfd", "newfd", "flags"),
    "fcntl": ("fd", "cmd", "arg"),
    "close": ("fd",),
    "close_range": ("fd", "max_fd", "flags"),
    "memfd_create": ("uname", "flags"),
    "ptrace": ("request", "pid", "addr", "data"),
    "init_module": ("umod", "len", "uargs"),
    "finit_module": ("fd", "uargs", "flags"),
    "mount": ("dev_name", "dir_name", "type", "flags", "data"),
    "umount2": ("name", "flags"),
    "setns": ("fd", "flags"),
    "unshare": ("unshare_flags",),
    "bpf": ("cmd", "uattr", "size"),
    "userfaultfd": ("flags",),
    "kill": ("pid", "sig"),
    "pipe": ("fildes",),
    "pipe2": ("fildes", "flags"),
}

BY_NAME: dict[str, Syscall] = {s.name: s for s in SYSCALLS}
CODES: dict[str, int] = {s.name: FIRST_SYSCALL_CODE + i for i, s in enumerate(SYSCALLS)}
BY_CODE: dict[int, Syscall] = {CODES[s.name]: s for s in SYSCALLS}
# slots of the kernel's per-event-type drop counter: one per code (0: out of range)
DROP_SLOTS = FIRST_SYSCALL_CODE + len(SYSCALLS)


def event_name(code: int) -> str:
    """The event type (evt.type) a record code stands for."""
    if code == EV_FORK:
        return "fork"
    if code == EV_EXIT:
        return "procexit"
    syscall = BY_CODE.get(code)
    return syscall.name if syscall is not None else "unknown"

# Always attached, whatever the rules: the process table needs them (exec updates a
# process's image; chdir keeps the cwd that relative paths resolve against).
LIFECYCLE = frozenset({"execve", "execveat", "chdir", "fchdir"})

# Always attached too: what the descriptor table needs (enforcer.state.fd_table), so that
# fd.type, fd.name and a socket's tuple do not depend on which rules are loaded nor on the
# process still being alive when userspace reads the record. When no rule asks for one of
# these, its records are reduced in the kernel to what the table needs (probe.render:
# successes only, close/dup/fcntl only for descriptors the kernel knows are tracked).
FD_STATE = frozenset({"socket", "socketpair", "bind", "connect", "accept", "accept4", "dup",
                      "dup2", "dup3", "fcntl", "close", "close_range", "pipe", "pipe2"})

# Of those, the ones that are frequent and that no rule reads unless it names them.
HOUSEKEEPING = frozenset({"close", "close_range", "fcntl", "socketpair", "pipe", "pipe2"})

OPEN_FAMILY = frozenset(s.name for s in SYSCALLS if s.family == "open")


def select(event_types: frozenset[str] | None) -> tuple[Syscall, ...]:
    """The syscalls to attach for rules that match these event types (None = any)."""
    if event_types is None:
        return SYSCALLS
    wanted = set(event_types) | LIFECYCLE | FD_STATE
    return tuple(s for s in SYSCALLS if s.name in wanted)
