"""Decoding the probe's fixed-size records (bpf/events.c `struct event_t`) into plain
dicts keyed by Falco field names. Pure: tests feed it bytes built with `pack()`.

Fields that need the process table (proc.*, user.name, container.*) or a path resolved
against the cwd are not decoded here: the live event (enforcer.state.live_event) derives them
lazily. Raw material for that is kept under keys starting with "_".
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from enforcer.sources import syscalls as sc
from enforcer.sources.probe import ARGV_HALF, PATH_SIZE, SADDR_SIZE
from enforcer.syscall_result import errno_text

HEADER = struct.Struct("<QIIIIq6qHHHHHHIQ16sI")  # ..., ppid, cgroup_id, comm, lpm_len
TRAILER = struct.Struct("<QQ")  # p1ptr, p2ptr (kernel-internal)
_P1 = HEADER.size
_P2 = _P1 + PATH_SIZE
_SA = _P2 + PATH_SIZE
_AV = _SA + SADDR_SIZE
_TR = (_AV + 2 * ARGV_HALF + 7) & ~7  # the u64 trailer is 8-aligned
RECORD_SIZE = _TR + TRAILER.size
# The probes emit a record with one path and nothing after it only up to that path's end
# (bpf/events.c record_size): decoding reads nothing past the lengths in the header.
MIN_RECORD_SIZE = _P1

AT_FDCWD = -100

_OPEN_FLAGS = (
    (0o100, "O_CREAT"), (0o200, "O_EXCL"), (0o400, "O_NOCTTY"), (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"), (0o4000, "O_NONBLOCK"), (0o10000, "O_DSYNC"),
    (0o40000, "O_DIRECT"), (0o100000, "O_LARGEFILE"), (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"), (0o1000000, "O_NOATIME"), (0o2000000, "O_CLOEXEC"),
    (0o10000000, "O_PATH"),
)
O_TMPFILE = 0o20000000 | 0o200000
O_DIRECTORY = 0o200000

_MODE_BITS = (
    (0o4000, "S_ISUID"), (0o2000, "S_ISGID"), (0o1000, "S_ISVTX"),
    (0o400, "S_IRUSR"), (0o200, "S_IWUSR"), (0o100, "S_IXUSR"),
    (0o40, "S_IRGRP"), (0o20, "S_IWGRP"), (0o10, "S_IXGRP"),
    (0o4, "S_IROTH"), (0o2, "S_IWOTH"), (0o1, "S_IXOTH"),
)

_PTRACE = {
    0: "PTRACE_TRACEME", 1: "PTRACE_PEEKTEXT", 2: "PTRACE_PEEKDATA", 3: "PTRACE_PEEKUSR",
    4: "PTRACE_POKETEXT", 5: "PTRACE_POKEDATA", 6: "PTRACE_POKEUSR", 7: "PTRACE_CONT",
    8: "PTRACE_KILL", 9: "PTRACE_SINGLESTEP", 12: "PTRACE_GETREGS", 13: "PTRACE_SETREGS",
    14: "PTRACE_GETFPREGS", 15: "PTRACE_SETFPREGS", 16: "PTRACE_ATTACH", 17: "PTRACE_DETACH",
    24: "PTRACE_SYSCALL", 0x4200: "PTRACE_SETOPTIONS", 0x4201: "PTRACE_GETEVENTMSG",
    0x4202: "PTRACE_GETSIGINFO", 0x4203: "PTRACE_SETSIGINFO", 0x4204: "PTRACE_GETREGSET",
    0x4205: "PTRACE_SETREGSET", 0x4206: "PTRACE_SEIZE", 0x4207: "PTRACE_INTERRUPT",
    0x4208: "PTRACE_LISTEN",
}

_AF = {0: "AF_UNSPEC", 1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6", 16: "AF_NETLINK",
       17: "AF_PACKET"}
_SOCKTYPE = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 5: "SOCK_SEQPACKET"}
_FCNTL = {0: "F_DUPFD", 1: "F_GETFD", 2: "F_SETFD", 3: "F_GETFL", 4: "F_SETFL",
          1030: "F_DUPFD_CLOEXEC"}
_BPF_CMD = {0: "BPF_MAP_CREATE", 1: "BPF_MAP_LOOKUP_ELEM", 2: "BPF_MAP_UPDATE_ELEM",
            5: "BPF_PROG_LOAD", 8: "BPF_PROG_ATTACH", 28: "BPF_LINK_CREATE"}


def open_flags_text(flags: int) -> str:
    """Open flags as Falco prints them: `O_RDONLY|O_CLOEXEC`."""
    acc = flags & 3
    names = ["O_RDONLY" if acc == 0 else "O_WRONLY" if acc == 1 else "O_RDWR"]
    if flags & O_TMPFILE == O_TMPFILE:
        names.append("O_TMPFILE")
        flags &= ~O_TMPFILE
    names += [name for bit, name in _OPEN_FLAGS if flags & bit]
    return "|".join(names)


def mode_text(mode: int) -> str:
    """A chmod mode as Falco prints it: `S_IRUSR|S_IWUSR|...`."""
    return "|".join(name for bit, name in _MODE_BITS if mode & bit) or "0"


def parse_sockaddr(raw: bytes) -> dict[str, Any] | None:
    """A sockaddr as {family, ip, port} or {family, path}; None when not understood."""
    if len(raw) < 2:
        return None
    family = int.from_bytes(raw[:2], "little")
    if family == socket.AF_INET and len(raw) >= 8:
        return {"family": "ipv4", "port": int.from_bytes(raw[2:4], "big"),
                "ip": str(ipaddress.IPv4Address(raw[4:8]))}
    if family == socket.AF_INET6 and len(raw) >= 24:
        ip6 = ipaddress.IPv6Address(raw[8:24])
        ip = str(ip6.ipv4_mapped) if ip6.ipv4_mapped else str(ip6)
        return {"family": "ipv6", "port": int.from_bytes(raw[2:4], "big"), "ip": ip}
    if family == socket.AF_UNIX:
        path = raw[2:].split(b"\0", 1)[0] if raw[2:3] != b"\0" else b"@" + raw[3:].rstrip(b"\0")
        return {"family": "unix", "path": path.decode(errors="replace")}
    return {"family": _AF.get(family, str(family))}


def _fmt(kind: str, value: int) -> Any:
    return _FORMATTERS.get(kind, _identity)(value)


def _identity(value: int) -> Any:
    return value


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


# Texts repeat (the same flags, modes and errnos over and over): computed once each. Bounded,
# since an argument's value is the caller's choice.
_cached = functools.lru_cache(maxsize=4096)
_FORMATTERS: dict[str, Callable[[int], Any]] = {
    "oflags": _cached(open_flags_text),
    "mode": _cached(mode_text),
    "octal": lambda v: f"0{v & 0o7777:o}",
    "ptrace": lambda v: _PTRACE.get(v, str(v)),
    "af": lambda v: _AF.get(v, str(v)),
    "socktype": lambda v: _SOCKTYPE.get(v & 0xF, str(v)),
    "bpfcmd": lambda v: _BPF_CMD.get(v, str(v)),
    "fd": _signed32,
    "fcntl": lambda v: _FCNTL.get(v, str(v)),
}
_ID_FMTS = ("uid", "gid")
_res_text = _cached(errno_text)
_oflags_text = _FORMATTERS["oflags"]


@functools.lru_cache(maxsize=1024)
def _comm_text(comm: bytes) -> str:
    return comm.split(b"\0", 1)[0].decode(errors="replace")


def _cstr(buf: bytes, start: int, length: int, cap: int) -> str:
    if length <= 0:
        return ""
    end = start + min(length, cap)
    nul = buf.find(b"\0", start, end)
    return buf[start:end if nul < 0 else nul].decode(errors="surrogateescape")


@dataclass(frozen=True)
class _Plan:
    """How to decode one syscall's record, worked out once from the syscall table."""

    name: str
    signed_ret: bool
    ret_key: str
    ints: tuple[tuple[int, str, str | None, Callable[[int], Any]], ...]  # slot, tp, key, fmt
    open_how: bool
    s1: str | None
    s2: str | None
    argv: bool


def _plan(s: sc.Syscall) -> _Plan:
    return _Plan(
        s.name, s.ret_is_fd or s.name.startswith("exec"), "evt.arg." + s.ret,
        # uid and gid arguments are named by the state (the event's container's user
        # table, enforcer.state.live_event), as Falco's evt.arg.uid is a user name
        tuple((i, a.tp, "evt.arg." + a.falco if a.falco and a.fmt not in _ID_FMTS else None,
               _FORMATTERS.get(a.fmt, _identity)) for i, a in enumerate(s.ints)),
        s.open_how, "evt.arg." + s.s1[1] if s.s1 else None,
        "evt.arg." + s.s2[1] if s.s2 else None, bool(s.argv))


_FD_STATE_CODES = frozenset(sc.CODES[n] for n in sc.FD_STATE)
_ACCEPT_CODES = frozenset({sc.CODES["accept"], sc.CODES["accept4"]})
_LOCAL = struct.Struct("<QQQ")
_NO_LOCAL = (0, 0, 0)
_PLANS = {code: _plan(s) for code, s in sc.BY_CODE.items()}
_unpack_header = HEADER.unpack_from
_HEADER_NAMES = ("ts, tgid, tid, uid, gid, ret, a0, a1, a2, a3, a4, a5, code, nargv, len1, "
                 "len2, argv_len, saddr_len, _ppid, cgroup_id, comm, _lpm")


def _compile_decoder(code: int, plan: _Plan) -> Callable[[bytes, int, tuple], dict[str, Any]]:
    """One syscall's decoder as generated Python: the whole dict built as one display, its
    keys in the order (and with the overwrites) of the plan's steps, so that a record costs
    one header unpack, one dict and the formatting its arguments need; no loop, no plan
    read per record. The steps, in order: the header's fields, the return value, each
    integer argument (formatted where it has a Falco name), open2's flags, the raw
    integers, what the descriptor table needs, the paths, the argv."""
    ns: dict[str, Any] = {"_comm_text": _comm_text, "_res_text": _res_text, "_cstr": _cstr,
                          "_signed32": _signed32, "_LOCAL": _LOCAL, "_NO_LOCAL": _NO_LOCAL,
                          "_oflags_text": _oflags_text}
    items = ['"_ts_mono": ts', '"proc.pid": tgid', '"thread.tid": tid', '"user.uid": uid',
             '"group.gid": gid', '"_comm": _comm_text(comm)', f'"_code": {code}',
             '"_cgroup_id": cgroup_id', f'"evt.type": {plan.name!r}', '"evt.dir": "<"',
             '"evt.rawres": ret', '"evt.res": _res_text(ret)', f'{plan.ret_key!r}: ret']
    ints = []
    for slot, tp, key, fmt in plan.ints:
        ints.append(f"{tp!r}: a{slot}")
        if key is not None:
            if fmt is _identity:
                items.append(f"{key!r}: a{slot}")
            else:
                ns[f"_fmt{slot}"] = fmt
                items.append(f"{key!r}: _fmt{slot}(a{slot})")
    if plan.open_how:
        how = next(f"a{slot}" for slot, tp, _k, _f in reversed(plan.ints) if tp == "how")
        items.append(f'"evt.arg.flags": _oflags_text({how})')
    items.append(f'"_ints": {{{", ".join(ints)}}}')
    if code in _FD_STATE_CODES:
        items.append('"_slots": (a0, a1, a2, a3, a4, a5)')
        if code in _ACCEPT_CODES:
            # without an address the kernel wrote none and cut the record before path2
            items.append(f'"_local": (_LOCAL.unpack_from(raw, off + {_P2}) if saddr_len '
                         'else _NO_LOCAL)')
    if plan.s1 is not None:
        items.append(f'"_s1": (s1 := _cstr(raw, off + {_P1}, len1, {PATH_SIZE}))')
        items.append(f"{plan.s1!r}: s1")
    if plan.s2 is not None:
        items.append(f'"_s2": (s2 := _cstr(raw, off + {_P2}, len2, {PATH_SIZE}))')
        items.append(f"{plan.s2!r}: s2")
    if plan.argv:
        items.append(f'"_argv": [p.decode(errors="surrogateescape") for p in raw[off + {_AV}:'
                     f'off + {_AV} + min(argv_len, {2 * ARGV_HALF})].split(b"\\0")[:nargv]]')
    lines = [f"def decode_{plan.name}(raw, off, header):",
             f"    ({_HEADER_NAMES}) = header"]
    if plan.signed_ret:
        lines.append("    ret = _signed32(ret)")
    lines.append("    ev = {" + ", ".join(items) + "}")
    lines += ["    if saddr_len:",
              f"        ev['_sockaddr'] = _parse_sockaddr(raw[off + {_SA}:"
              f"off + {_SA} + saddr_len])",
              "    return ev", ""]
    ns["_parse_sockaddr"] = parse_sockaddr
    exec(compile("\n".join(lines), f"<decode {plan.name}>", "exec"), ns)  # noqa: S102
    return ns[f"decode_{plan.name}"]


_DECODERS = {code: _compile_decoder(code, plan) for code, plan in _PLANS.items()}


def decode(raw: bytes, off: int = 0) -> dict[str, Any]:
    """The record at `off` in `raw` (a batch read from the ring holds many) -> dict of the
    event's own fields (Falco names) and raw material (`_`)."""
    header = _unpack_header(raw, off)
    decoder = _DECODERS.get(header[12])
    if decoder is not None:
        return decoder(raw, off, header)
    (ts, tgid, tid, uid, gid, _ret, a0, a1, _a2, _a3, _a4, _a5, code, _nargv, _len1, _len2,
     _argv_len, _saddr_len, _ppid, cgroup_id, comm, _lpm) = header
    ev: dict[str, Any] = {
        "_ts_mono": ts, "proc.pid": tgid, "thread.tid": tid, "user.uid": uid,
        "group.gid": gid, "_comm": _comm_text(comm), "_code": code, "_cgroup_id": cgroup_id,
    }
    if code == sc.EV_FORK:
        ev["evt.type"] = "fork"
        ev["_child"] = a0
        ev["_parent_tid"] = a1
    elif code == sc.EV_EXIT:
        ev["evt.type"] = "procexit"
    else:
        ev["evt.type"] = f"unknown({code})"
    return ev


def pack(*, code: int, tgid: int = 1, tid: int | None = None, uid: int = 0, gid: int = 0,
         ret: int = 0, ints: tuple[int, ...] = (), comm: str = "", path1: str = "",
         path2: str = "", argv: tuple[str, ...] = (), saddr: bytes = b"", ts: int = 0,
         ppid: int = 0, cgroup_id: int = 0) -> bytes:
    """Build a record exactly as the kernel side lays it out (for tests and benchmarks)."""
    a = list(ints) + [0] * (6 - len(ints))
    p1 = path1.encode() + b"\0" if path1 else b""
    p2 = path2.encode() + b"\0" if path2 else b""
    av = b"".join(x.encode() + b"\0" for x in argv)
    head = HEADER.pack(ts, tgid, tid if tid is not None else tgid, uid, gid, ret, *a, code,
                       len(argv), len(p1), len(p2), len(av), len(saddr), ppid, cgroup_id,
                       comm.encode()[:15], 0)
    return (head + p1.ljust(PATH_SIZE, b"\0") + p2.ljust(PATH_SIZE, b"\0")
            + saddr.ljust(SADDR_SIZE, b"\0") + av.ljust(2 * ARGV_HALF, b"\0")).ljust(
                _TR, b"\0") + TRAILER.pack(0, 0)
