"""Partial evaluation of a rule for one process, and what the kernel can check of the rest.

The in-kernel kill (`kill: {in_kernel: true}`) runs without the process table, so a rule is
split in two: the checks on the process's own fields (proc.*, user.*, group.*,
container.*, k8s.*) are decided in userspace when the process execs, and what is left —
the residue — only reads the event's own fields (an open's path and flags; a connect's,
sendto's or sendmsg's remote port, address and family, from its sockaddr; the result).
The residue is then translated into the kernel's vocabulary (`Conjunct`s: syscall set,
open-flag or address-family classes, result classes, path, port and address sets) or
refused with the reason (`Ineligible`). Never a false kill: every translation is
exact, and anything the kernel cannot see exactly (relative paths, regexes, substrings,
fd.nameraw...) makes the rule ineligible for the kernel; the userspace kill still applies.

Three values: `partial()` returns True, False, or a residue expression.

Which process fields count as fixed for the life of an exec image is `FIXED`: the name,
exe, cmdline and args (set at exec; a comm rename is caught in the kernel, which compares
the current comm), the uid/gid (compared in the kernel too), the container (cgroup id,
compared in the kernel), and the ancestors' fields. The process table never reparents: a
dead parent's entry keeps answering proc.pname, so ancestors change only when an ancestor
execs, renames itself, or its pid is reused; the kernel stamps each of those and refuses to
kill while userspace has not recomputed (see bpf/enforce.c). Fields that change without a
stamp (cwd, session, process group, loginuid, durations, environment) are not fixed.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import product
from typing import Any

from enforcer.rules import checks, codegen, nodes
from enforcer.syscall_result import errno_text

OPEN_TYPES = frozenset({"open", "openat", "openat2", "creat"})
FLAG_TYPES = frozenset({"open", "openat", "openat2"})  # creat has no flags argument
NET_TYPES = frozenset({"connect", "sendto", "sendmsg"})
KERNEL_TYPES = OPEN_TYPES | NET_TYPES

FIXED = frozenset({
    "proc.name", "proc.exe", "proc.exepath", "proc.cmdline", "proc.args", "proc.pid",
    "proc.vpid", "proc.ppid", "proc.pname", "proc.pcmdline", "proc.pexe", "proc.pexepath",
    "proc.aname", "proc.apid", "proc.aexe", "proc.aexepath", "proc.acmdline", "proc.tty",
    "proc.is_exe_from_memfd", "proc.pid.ts", "user.uid", "user.name", "group.gid",
    "group.name",
})
FIXED_PREFIXES = ("container.", "k8s.")
ANCESTOR_FIELDS = frozenset({"proc.pname", "proc.pcmdline", "proc.pexe", "proc.pexepath",
                             "proc.ppid"})
ANCESTOR_CHAINS = frozenset({"proc.aname", "proc.apid", "proc.aexe", "proc.aexepath",
                             "proc.acmdline"})

# Open classes: 6 bits of the open flags, so a class set is a 64-bit mask.
# bit 0: readable (access mode O_RDONLY or O_RDWR, as evt.is_open_read)
# bit 1: writable (O_WRONLY or O_RDWR, as evt.is_open_write)
# bit 2: O_TRUNC, bit 3: O_CREAT, bit 4: the O_DIRECTORY bit (fd.typechar 'd'),
# bit 5: O_TMPFILE (which includes the O_DIRECTORY bit but prints as O_TMPFILE)
ALL_CLASSES = (1 << 64) - 1
R, W, TRUNC, CREAT, DIRBIT, TMPFILE = 1, 2, 4, 8, 16, 32


def class_set(pred: Callable[[int], bool]) -> int:
    """The mask of the 64 classes satisfying `pred`."""
    return sum(1 << c for c in range(64) if pred(c))


def _readable(c: int) -> bool:
    return bool(c & R)


def _writable(c: int) -> bool:
    return bool(c & W)


# `evt.arg.flags contains NAME`, as decode.open_flags_text renders the flags. The access
# mode is 0 (R only), 1 (W only), 2 (R and W) or 3 (neither): O_RDWR prints for 2 and 3.
_FLAG_TEXT: dict[str, Callable[[int], bool]] = {
    "O_RDONLY": lambda c: c & R and not c & W,
    "O_WRONLY": lambda c: c & W and not c & R,
    "O_RDWR": lambda c: bool(c & R) == bool(c & W),
    "O_TRUNC": lambda c: bool(c & TRUNC),
    "O_CREAT": lambda c: bool(c & CREAT),
    "O_DIRECTORY": lambda c: bool(c & DIRBIT) and not c & TMPFILE,
    "O_TMPFILE": lambda c: bool(c & TMPFILE),
}
# Net classes (connect, and sendto/sendmsg with an address): what the syscall's sockaddr
# is, read at entry as the event probe reads it
# (enforcer.sources.decode.parse_sockaddr): AF_INET (at least 8 bytes), AF_INET6 (at
# least 24 bytes), AF_INET6 holding an IPv4-mapped address (printed as IPv4, so fd.sip
# and fd.net see an IPv4 address, while fd.typechar is 6), AF_UNIX, anything else. A
# connect without a readable sockaddr is in no class: the kernel never judges it.
F4, F6, F6M, FUNIX, FOTHER = range(5)
ALL_NET = (1 << 5) - 1
INET = (1 << F4) | (1 << F6) | (1 << F6M)
_NET_REPR: dict[int, dict[str, str | None]] = {
    F4: {"fd.typechar": "4", "fd.type": "ipv4", "fd.sockfamily": "ip"},
    F6: {"fd.typechar": "6", "fd.type": "ipv6", "fd.sockfamily": "ip"},
    F6M: {"fd.typechar": "6", "fd.type": "ipv6", "fd.sockfamily": "ip"},
    FUNIX: {"fd.typechar": "u", "fd.type": "unix", "fd.sockfamily": "unix"},
    FOTHER: {"fd.typechar": None, "fd.type": None, "fd.sockfamily": None},
}
# the remote end, from the syscall's sockaddr (enforcer.state.live_event: for connect,
# sendto and sendmsg this process is the client, so the server is the remote end; fd.ip
# and fd.port are the server's)
PORT_FIELDS = frozenset({"fd.sport", "fd.rport", "fd.port"})
ADDR_FIELDS = frozenset({"fd.sip", "fd.rip", "fd.ip"})
NET_FIELDS = frozenset({"fd.net", "fd.snet", "fd.rnet"})

# Result classes, a 32-bit mask: the syscall returned 0, a positive value, an errno of
# NAMED_ERRNOS (one bit each), or another errno. bpf/enforce.c's result_bit() is rendered
# from the same list (enforcer.kernel.kill_tables.render).
NAMED_ERRNOS = tuple(getattr(errno, n) for n in (
    "EINPROGRESS", "EAGAIN", "EALREADY", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT",
    "ENETUNREACH", "EHOSTUNREACH", "EADDRNOTAVAIL", "EADDRINUSE", "EISCONN", "EINTR",
    "EACCES", "EPERM", "ENOENT", "EEXIST", "ENOTDIR", "EISDIR", "ELOOP", "EROFS",
    "ENAMETOOLONG", "EAFNOSUPPORT", "EBADF", "ENOTSOCK", "EINVAL", "ENOMEM", "ENETDOWN",
    "EPROTOTYPE", "ENXIO"))
R_ZERO, R_POS, R_OTHER = 1, 2, 4
ALL_RESULTS = (1 << (3 + len(NAMED_ERRNOS))) - 1
OK = R_ZERO | R_POS  # the open returned an fd
FAIL = ALL_RESULTS & ~OK
BOTH = ALL_RESULTS


def errno_bit(err: int) -> int:
    """The result bit of a failure with errno `err`."""
    return 1 << (3 + NAMED_ERRNOS.index(err)) if err in NAMED_ERRNOS else R_OTHER


def result_bit(ret: int) -> int:
    """The result class of a syscall's return value (bpf/enforce.c's result_bit)."""
    if ret == 0:
        return R_ZERO
    return R_POS if ret > 0 else errno_bit(-ret)


class Ineligible(Exception):
    """The residue cannot be checked exactly in the kernel; str() is the reason."""


def is_fixed(f: nodes.Field) -> bool:
    """Whether the field is the process's own and fixed for the life of its exec image."""
    return f.name in FIXED or f.name.startswith(FIXED_PREFIXES)


def _operand_fields(check: nodes.Check) -> list[nodes.Field]:
    out = [check.field]
    if isinstance(check.right, nodes.FieldValue):
        op = check.right.operand
        out.append(op if isinstance(op, nodes.Field) else op.field)
    return out


def is_process_check(check: nodes.Check) -> bool:
    """A check decided by the process's fixed fields alone."""
    return all(is_fixed(f) for f in _operand_fields(check))


def constant(check: nodes.Check) -> bool | None:
    """Checks whose value is known without any event: `evt.num = 0` (the never_true macro;
    events are numbered from 1)."""
    f = check.left
    if (isinstance(f, nodes.Field) and f.name == "evt.num" and f.arg is None
            and check.op in ("=", "==") and isinstance(check.right, nodes.Value)
            and check.right.text.strip() == "0"):
        return False
    return None


Decider = Callable[[nodes.Check], bool | None]
Residue = bool | nodes.Expr


def partial(expr: nodes.Expr, decide: Decider) -> Residue:
    """Reduce `expr`: checks `decide` knows become constants, the rest stays."""
    if isinstance(expr, nodes.Macro):
        return partial(expr.expr, decide)
    if isinstance(expr, nodes.And | nodes.Or):
        absorbing = isinstance(expr, nodes.Or)  # True absorbs an Or, False an And
        kept = []
        for child in expr.children:
            r = partial(child, decide)
            if r is absorbing:
                return absorbing
            if r is not (not absorbing):
                kept.append(r)
        if not kept:
            return not absorbing
        if len(kept) == 1:
            return kept[0]
        return type(expr)(tuple(kept))
    if isinstance(expr, nodes.Not):
        r = partial(expr.child, decide)
        return (not r) if isinstance(r, bool) else nodes.Not(r)
    if isinstance(expr, nodes.Check):
        value = decide(expr)
        return expr if value is None else bool(value)
    raise TypeError(f"cannot evaluate {expr!r}")


def static_decider(check: nodes.Check) -> bool | None:
    """Only what is known without a process: the constants."""
    return constant(check)


# keyed by identity: hashing a check hashes its whole value list; the check is kept in
# the value so that its id is not reused while cached
_compiled: dict[int, tuple[nodes.Check, Callable[[Any], Any]]] = {}


def _run(check: nodes.Check, event: Any) -> bool:
    """The engine's own code for one check (compiled once)."""
    found = _compiled.get(id(check))
    if found is None or found[0] is not check:
        if len(_compiled) > 10_000:
            _compiled.clear()
        found = _compiled[id(check)] = (check, codegen.compile_check(check))
    return bool(found[1](event))


def process_decider(event: Any) -> Decider:
    """Decides every process check with the engine's own operator code, on `event` (an
    Event whose process fields are the process's: see enforcer.kernel.arming)."""
    def decide(check: nodes.Check) -> bool | None:
        value = constant(check)
        if value is not None:
            return value
        if not is_process_check(check):
            return None
        return _run(check, event)
    return decide


# --- the kernel's vocabulary ------------------------------------------------------------
PathAtom = tuple[str, str]  # ("exact" | "prefix" | "dir", text)
PathSet = frozenset[PathAtom]
PortSet = tuple[tuple[int, int], ...]  # sorted, disjoint inclusive ranges
AddrSet = frozenset[str]  # networks as text: "10.0.0.0/8", "::1/128"


@dataclass(frozen=True)
class Lit:
    """One literal of the kernel's residue. `kind` is "types" (a set of syscall names),
    "classes" (a mask of open classes, or of net classes for a connect), "result" (result
    class bits), "path" (a path set: the path matches one of its atoms), "port" (a port
    set) or "addr" (a set of networks). `negated` only for path, port and addr; the
    others are complemented when negated."""

    kind: str
    value: Any
    negated: bool = False


@dataclass(frozen=True)
class Conjunct:
    """The kernel kills when the syscall, class and result are in these sets, the path
    (absolute and already normal) matches every set of `paths_all` and none of
    `paths_none`, and the connect's remote port and address are in every set of
    `ports_all`/`addrs_all` and none of `ports_none`/`addrs_none`. A conjunct with no
    path sets does not look at the path; one with port or address sets only matches
    connects to an IPv4 or IPv6 address (their classes say so)."""

    types: frozenset[str]
    classes: int
    results: int
    paths_all: frozenset[PathSet] = frozenset()
    paths_none: frozenset[PathSet] = frozenset()
    ports_all: frozenset[PortSet] = frozenset()
    ports_none: frozenset[PortSet] = frozenset()
    addrs_all: frozenset[AddrSet] = frozenset()
    addrs_none: frozenset[AddrSet] = frozenset()

    @property
    def uses_path(self) -> bool:
        return bool(self.paths_all or self.paths_none)

    @property
    def uses_net(self) -> bool:
        return bool(self.ports_all or self.ports_none or self.addrs_all or self.addrs_none)

    @property
    def needs_result(self) -> bool:
        return self.results != BOTH


MAX_CONJUNCTS = 64
_SUPPORTED = ("on the event the kernel checks evt.type, evt.dir, evt.rawres, evt.res; "
              "for opens evt.is_open_read/write, evt.arg.flags contains O_*, fd.typechar, "
              "fd.num against 0, fd.name =/in/startswith/pmatch with absolute paths, "
              "fd.directory =/in; for connect, sendto and sendmsg fd.typechar, fd.type, "
              "fd.sockfamily, fd.sport/rport/port, fd.sip/rip/ip and fd.net/snet/rnet")


_SUPPORTED_NET = ("on those the kernel checks evt.type, evt.dir, evt.rawres, evt.res, "
                  "fd.typechar, fd.type, fd.sockfamily, fd.sport/rport/port, "
                  "fd.sip/rip/ip and fd.net/snet/rnet")


def _values(check: nodes.Check) -> list[str]:
    if isinstance(check.right, nodes.Value):
        return [check.right.text]
    if isinstance(check.right, nodes.ValueList):
        return [v.text for v in check.right.items]
    raise Ineligible(f"`{check}` compares with another field; {_SUPPORTED}")


def _normal(path: str) -> bool:
    """An absolute path exactly as userspace's fd.name would print it."""
    if not path.startswith("/"):
        return False
    if path == "/":
        return True
    return all(part not in ("", ".", "..") for part in path[1:].split("/"))


def _bool(text: str, check: nodes.Check) -> bool:
    low = text.strip().lower()
    if low in ("true", "1"):
        return True
    if low in ("false", "0"):
        return False
    raise Ineligible(f"`{check}`: not a boolean")


def _engine(check: nodes.Check, field: str, value: Any) -> bool:
    """The engine's own answer for the check on an event whose `field` is `value`."""
    return _run(check, _Known({field: value}))


# keyed by identity, as _compiled: a port set is 65536 runs of the engine's check
_port_sets: dict[int, tuple[nodes.Check, PortSet]] = {}


def _port_set(check: nodes.Check) -> PortSet:
    """The ports for which the engine's check is true (a port is always there for a
    connect to an IPv4 or IPv6 address)."""
    found = _port_sets.get(id(check))
    if found is None or found[0] is not check:
        if len(_port_sets) > 1000:
            _port_sets.clear()
        name = check.field.name
        ranges: list[tuple[int, int]] = []
        for port in range(65536):
            if _engine(check, name, port):
                if ranges and ranges[-1][1] == port - 1:
                    ranges[-1] = (ranges[-1][0], port)
                else:
                    ranges.append((port, port))
        found = _port_sets[id(check)] = (check, tuple(ranges))
    return found[1]


def _addr_lit(check: nodes.Check) -> Lit:
    """fd.sip/rip/ip (addresses, by value) and fd.net/snet/rnet (networks) as a set of
    networks; `!=` is the negation (an address is always there for these connects)."""
    name, op = check.field.name, check.op
    if op not in ("=", "==", "!=", "in", "intersects"):
        raise Ineligible(f"`{check}`: only =, !=, in on addresses are exact in the kernel")
    nets: set[str] = set()
    for text in _values(check):
        if "%" in text:
            raise Ineligible(f"`{check}`: scoped IPv6 addresses are not checked in the kernel")
        try:
            if name in NET_FIELDS:
                net = checks.convert(text, "ipnet", op)
            else:
                net = ipaddress.ip_network(checks.convert(text, "ipaddr", op))
        except ValueError as exc:
            raise Ineligible(f"`{check}`: {exc}") from None
        nets.add(str(net))
    return Lit("addr", frozenset(nets), op == "!=")


def _net_classes(check: nodes.Check) -> int:
    """The net classes for which the engine's check on fd.typechar/type/sockfamily is
    true, from the value userspace derives for each class."""
    name = check.field.name
    return sum(1 << cls for cls, values in _NET_REPR.items()
               if _engine(check, name, values[name]))


def _result_lit(check: nodes.Check) -> Lit:
    """evt.rawres and evt.res as result classes: exact only when the check gives the same
    answer for every value of a class (every positive value, every other errno)."""
    name, op = check.field.name, check.op
    numeric = name == "evt.rawres"
    allowed = ("=", "==", "!=", "<", "<=", ">", ">=", "in") if numeric else (
        "=", "==", "!=", "in", "intersects")
    if op not in allowed:
        raise Ineligible(f"`{check}`: the kernel only compares {name} with {', '.join(allowed)}")
    literals: set[int] = set()
    for text in _values(check):  # the values near a literal are where the answer changes
        n = checks.parse_number(text)
        if n is not None and float(n).is_integer():
            literals.add(int(n))

    def answer(ret: int) -> bool:
        return _engine(check, name, ret if numeric else errno_text(ret))

    bits = R_ZERO if answer(0) else 0
    for err in NAMED_ERRNOS:
        bits |= errno_bit(err) if answer(-err) else 0
    positives = {1, 2**31 - 1, 2**40} | {n + d for n in literals for d in (-1, 0, 1) if n + d > 0}
    others = {-e for e in range(1, 4096) if e not in NAMED_ERRNOS} | {
        n + d for n in literals for d in (-1, 0, 1) if n + d < 0 and -(n + d) not in NAMED_ERRNOS}
    for cls, sample in ((R_POS, positives), (R_OTHER, others)):
        seen = {answer(v) for v in sample}
        if len(seen) > 1:
            what = "positive value" if cls == R_POS else (
                "errno (it tells apart " + ", ".join(errno.errorcode[e] for e in NAMED_ERRNOS)
                + " and the others)")
            raise Ineligible(f"`{check}` depends on which {what} the syscall returns; the "
                             "kernel only tells 0, a positive value and its errnos apart")
        bits |= cls if seen == {True} else 0
    return Lit("result", bits)


def literal(check: nodes.Check, family: str = "open") -> nodes.Expr | Lit | bool:
    """The kernel literal for one event check of an open (family "open") or a connect
    ("net"): an And of literals for flag texts, a constant, or Ineligible with the
    reason."""
    if not isinstance(check.left, nodes.Field):
        raise Ineligible(f"`{check}` transforms an event field; {_SUPPORTED}")
    f = check.left
    name, op = f.name, check.op
    if f.arg is not None:
        raise Ineligible(f"`{check}`: {f.key} is not visible to the kernel; {_SUPPORTED}")
    family_types = OPEN_TYPES if family == "open" else NET_TYPES
    if name == "evt.type":
        vals = set(_values(check))
        if op in ("=", "==", "in", "intersects"):
            return Lit("types", frozenset(vals & family_types))
        if op == "!=":
            return Lit("types", family_types - vals)
    elif name == "evt.dir" and op in ("=", "==", "!=", "in"):
        return _engine(check, name, "<")  # opens and connects are judged at their exit
    elif name in ("evt.rawres", "evt.res"):
        return _result_lit(check)
    elif family == "net":
        return _net_literal(check)
    elif name in ("evt.is_open_read", "evt.is_open_write") and op in ("=", "==", "!="):
        want = _bool(_values(check)[0], check) != (op == "!=")
        test = _readable if name.endswith("read") else _writable
        return Lit("classes", class_set(lambda c: test(c) == want))
    elif name == "evt.arg.flags" and op == "contains" and isinstance(check.right, nodes.Value):
        pred = _FLAG_TEXT.get(check.right.text)
        if pred is None:
            raise Ineligible(f"`{check}`: the kernel knows the flags "
                             f"{', '.join(_FLAG_TEXT)} only")
        return nodes.And((Lit("types", FLAG_TYPES), Lit("classes", class_set(pred))))  # type: ignore[arg-type]
    elif name == "fd.typechar" and op in ("=", "==", "!=", "in"):
        chars = {v.strip("'\"") for v in _values(check)}
        mask = 0
        if "f" in chars:
            mask |= class_set(lambda c: not c & DIRBIT)
        if "d" in chars:
            mask |= class_set(lambda c: bool(c & DIRBIT))
        return Lit("classes", (ALL_CLASSES & ~mask) if op == "!=" else mask)
    elif name == "fd.num" and op in ("=", "==", "!=", "<", "<=", ">", ">="):
        return Lit("result", _fd_num_results(check))
    elif name == "fd.name" and op in ("=", "==", "in"):
        return Lit("path", frozenset(("exact", v) for v in _values(check) if _normal(v)))
    elif name == "fd.name" and op == "startswith":
        return Lit("path", frozenset(("prefix", v) for v in _values(check)))
    elif name == "fd.name" and op == "pmatch":
        atoms: set[PathAtom] = set()
        for v in _values(check):
            if any(ch in v for ch in "*?["):
                raise Ineligible(f"`{check}`: pmatch with wildcards is not a path prefix")
            norm = v.rstrip("/") or "/"
            if norm == "/":
                atoms.add(("prefix", "/"))
            elif _normal(norm):
                atoms.update({("exact", norm), ("prefix", norm + "/")})
        return Lit("path", frozenset(atoms))
    elif name == "fd.directory" and op in ("=", "==", "in"):
        return Lit("path", frozenset(("dir", v) for v in _values(check) if _normal(v)))
    reason = _REASONS.get(name, "")
    raise Ineligible(f"`{check}` cannot be checked exactly in the kernel{reason}; "
                     f"{_SUPPORTED}")


# keyed by identity, as _compiled: the checks of loaded rules live as long as the rules
_literals: dict[tuple[int, str], tuple[nodes.Check, Any]] = {}


def _cached_literal(check: nodes.Check, family: str) -> Any:
    found = _literals.get((id(check), family))
    if found is None or found[0] is not check:
        if len(_literals) > 10_000:
            _literals.clear()
        try:
            value: Any = literal(check, family)
        except Ineligible as exc:
            value = exc
        found = _literals[(id(check), family)] = (check, value)
    if isinstance(found[1], Ineligible):
        raise found[1]
    return found[1]


def _net_literal(check: nodes.Check) -> Lit:
    name, op = check.field.name, check.op
    if name in ("fd.typechar", "fd.type", "fd.sockfamily") and op in (
            "=", "==", "!=", "in", "intersects"):
        return Lit("classes", _net_classes(check))
    if name in PORT_FIELDS and op in ("=", "==", "!=", "<", "<=", ">", ">=", "in",
                                      "intersects"):
        return Lit("port", _port_set(check))
    if name in ADDR_FIELDS or name in NET_FIELDS:
        return _addr_lit(check)
    reason = _NET_REASONS.get(name, _REASONS.get(name, ""))
    raise Ineligible(f"`{check}` cannot be checked exactly in the kernel on connect, "
                     f"sendto or sendmsg{reason}; {_SUPPORTED_NET}")


_REASONS = {
    "fd.nameraw": " (the raw path is what the process passed; rules on it need userspace)",
    "fd.filename": " (a file name without its directory is not a path prefix)",
    "fd.name": " (only equality, prefixes and pmatch are path-prefix checks: regex, glob, "
               "contains and endswith are not)",
    "fd.directory": " (only equality with a directory is exact)",
    "evt.failed": " (use evt.rawres < 0)",
}
_LOCAL_END = (" (the local end of the socket is not in the syscall's arguments: userspace "
              "reads it from /proc)")
_NET_REASONS = {
    "fd.l4proto": (" (the protocol is the socket's, not in the syscall's arguments: "
                   "userspace reads it from /proc)"),
    "fd.connected": " (userspace reads the socket's state from /proc)",
    "fd.name": " (a connection's name includes its local end, which userspace reads from "
               "/proc)",
    "fd.num": " (the socket's descriptor number varies from call to call)",
    "fd.sip.name": " (a domain name needs a DNS lookup)",
    "fd.rip.name": " (a domain name needs a DNS lookup)",
    "fd.cip.name": " (a domain name needs a DNS lookup)",
    "fd.lip.name": " (a domain name needs a DNS lookup)",
    **{f: _LOCAL_END for f in ("fd.cip", "fd.cport", "fd.lip", "fd.lport", "fd.cnet",
                               "fd.lnet")},
}


def _fd_num_results(check: nodes.Check) -> int:
    """Result bits for `fd.num OP N` on an open: fd.num is -1 on failure, the fd (>= 0) on
    success; the check must be the same for every positive fd."""
    try:
        n = int(_values(check)[0], 0)
    except ValueError:
        raise Ineligible(f"`{check}`: not a number") from None
    ops = {"=": lambda x: x == n, "==": lambda x: x == n, "!=": lambda x: x != n,
           "<": lambda x: x < n, "<=": lambda x: x <= n, ">": lambda x: x > n,
           ">=": lambda x: x >= n}
    pred = ops[check.op]
    positive = {pred(x) for x in {1, 2**31 - 1} | {n + d for d in (-1, 0, 1) if n + d > 0}}
    if len(positive) > 1:
        raise Ineligible(f"`{check}` depends on which fd the open returns; the kernel "
                         "only tells success (fd.num >= 0) from failure")
    return ((R_ZERO if pred(0) else 0) | (R_POS if positive == {True} else 0)
            | (FAIL if pred(-1) else 0))


def _nnf(expr: Residue, family: str = "open", negate: bool = False) -> Any:
    """Negation pushed down to literals; Checks become Lits (raising Ineligible)."""
    if isinstance(expr, bool):
        return expr != negate
    if isinstance(expr, Lit):
        if not negate:
            return expr
        if expr.kind in ("path", "port", "addr"):
            return Lit(expr.kind, expr.value, not expr.negated)
        if expr.kind == "types":
            return Lit("types", (OPEN_TYPES if family == "open" else NET_TYPES) - expr.value)
        if expr.kind == "classes":
            return Lit("classes", (ALL_CLASSES if family == "open" else ALL_NET) & ~expr.value)
        return Lit("result", BOTH & ~expr.value)
    if isinstance(expr, nodes.Macro):
        return _nnf(expr.expr, family, negate)
    if isinstance(expr, nodes.Not):
        return _nnf(expr.child, family, not negate)
    if isinstance(expr, nodes.Check):
        return _nnf(_cached_literal(expr, family), family, negate)
    if isinstance(expr, nodes.And | nodes.Or):
        is_and = isinstance(expr, nodes.And) != negate
        kids = tuple(_nnf(c, family, negate) for c in expr.children)
        return ("and" if is_and else "or", kids)
    raise Ineligible(f"`{expr}` cannot be checked in the kernel")


def _dnf(node: Any) -> list[list[Lit]] | bool:
    if isinstance(node, bool):
        return node
    if isinstance(node, Lit):
        return [[node]]
    kind, kids = node
    parts = [_dnf(k) for k in kids]
    if kind == "or":
        if any(p is True for p in parts):
            return True
        out = [c for p in parts if p is not False for c in p]  # type: ignore[union-attr]
        if len(out) > MAX_CONJUNCTS * 4:
            raise Ineligible("the residue has too many alternatives for the kernel")
        return out or False
    if any(p is False for p in parts):
        return False
    parts = [p for p in parts if p is not True]
    if not parts:
        return True
    size = 1
    for p in parts:
        size *= len(p)  # type: ignore[arg-type]
        if size > MAX_CONJUNCTS * 4:
            raise Ineligible("the residue has too many alternatives for the kernel")
    return [[lit for c in combo for lit in c] for combo in product(*parts)]  # type: ignore[arg-type]


_TYPES_TEXT = "open, openat, openat2, creat, connect, sendto and sendmsg"


def conjuncts(residue: Residue, event_types: Iterable[str] | None) -> tuple[Conjunct, ...]:
    """The residue (after partial evaluation) as kernel conjuncts: () when it is False.

    Raises Ineligible when the kernel cannot check it exactly, including when the rule can
    match events other than opens and connects."""
    types = KERNEL_TYPES if event_types is None else frozenset(event_types)
    if event_types is None or not types <= KERNEL_TYPES:
        raise Ineligible(f"the kernel kills only on {_TYPES_TEXT}; this rule can match "
                         "other events")
    out: list[Conjunct] = []
    for t in sorted(types):
        _family_conjuncts(_for_type(residue, t), _family(t), frozenset({t}), out)
    out = _merged(out)
    if len(out) > MAX_CONJUNCTS:
        raise Ineligible("the residue has too many alternatives for the kernel")
    return tuple(out)


def _family(etype: str) -> str:
    return "open" if etype in OPEN_TYPES else "net"


def _for_type(residue: Residue, etype: str) -> Residue:
    """The residue for one syscall: its evt.type checks decided (with the engine's code),
    so that `(evt.type = openat and fd.name = /x) or (evt.type = connect and fd.sport =
    1)` leaves only what that syscall reads."""
    if isinstance(residue, bool):
        return residue

    def decide(check: nodes.Check) -> bool | None:
        f = check.left
        if (isinstance(f, nodes.Field) and f.name == "evt.type" and f.arg is None
                and not isinstance(check.right, nodes.FieldValue)):
            return _engine(check, "evt.type", etype)
        return None
    return partial(residue, decide)


def _merged(conj: list[Conjunct]) -> list[Conjunct]:
    """Conjuncts that differ only in their classes, or only in their results, or only in
    their syscalls, as one (their union is exactly that): `(fd.typechar = 4 or
    fd.typechar = 6) and (evt.rawres >= 0 or evt.res = EINPROGRESS)` takes one slot."""
    out = list(conj)
    changed = True
    while changed:
        changed = False
        for i, j in product(range(len(out)), repeat=2):
            if i >= j:
                continue
            a, b = out[i], out[j]
            rest_a = (a.paths_all, a.paths_none, a.ports_all, a.ports_none, a.addrs_all,
                      a.addrs_none)
            rest_b = (b.paths_all, b.paths_none, b.ports_all, b.ports_none, b.addrs_all,
                      b.addrs_none)
            if rest_a != rest_b or bool(a.types & NET_TYPES) != bool(b.types & NET_TYPES):
                continue  # one family per conjunct: classes mean different things
            same = [a.types == b.types, a.classes == b.classes, a.results == b.results]
            if sum(same) < 2:
                continue
            out[i] = Conjunct(a.types | b.types, a.classes | b.classes, a.results | b.results,
                              *rest_a)
            del out[j]
            changed = True
            break
    return out


def _family_conjuncts(residue: Residue, family: str, types: frozenset[str],
                      out: list[Conjunct]) -> None:
    dnf = _dnf(_nnf(residue, family))
    if dnf is False:
        return
    if dnf is True:
        dnf = [[]]
    for lits in dnf:  # type: ignore[union-attr]
        t, res = set(types), BOTH
        cls = ALL_CLASSES if family == "open" else ALL_NET
        pos: dict[str, set[Any]] = {"path": set(), "port": set(), "addr": set()}
        neg: dict[str, set[Any]] = {"path": set(), "port": set(), "addr": set()}
        for lit in lits:
            if lit.kind == "types":
                t &= lit.value
            elif lit.kind == "classes":
                cls &= lit.value
            elif lit.kind == "result":
                res &= lit.value
            elif lit.negated:
                if lit.value:
                    neg[lit.kind].add(lit.value)
            else:
                pos[lit.kind].add(lit.value)
        if pos["port"] or pos["addr"] or neg["port"] or neg["addr"]:
            cls &= INET  # only these connects name a remote port and address
        if not t or not cls or not res or any(not v for s in pos.values() for v in s):
            continue
        c = Conjunct(frozenset(t), cls, res,
                     frozenset(pos["path"]), frozenset(neg["path"]),
                     frozenset(pos["port"]), frozenset(neg["port"]),
                     frozenset(pos["addr"]), frozenset(neg["addr"]))
        if c not in out:
            out.append(c)


def rule_eligibility(rule: Any) -> str | None:
    """None when the rule can be enforced in the kernel, else the reason it cannot.

    Statically: every check of the condition must be a fixed process field (decided at
    exec) or an event check the kernel makes exactly (for every kind of syscall the rule
    matches), and the rule must only match opens and connects."""
    types = rule.event_types
    if types is None or not frozenset(types) <= KERNEL_TYPES:
        return (f"the kernel kills only on {_TYPES_TEXT}; this rule matches "
                + ("any event" if types is None else
                   ", ".join(sorted(set(types) - KERNEL_TYPES))))
    residue = partial(rule.expr, static_decider)
    if residue is False:
        return "the condition can never be true"
    if isinstance(residue, bool):
        return None
    for etype in sorted(types):
        for node in nodes.walk(_for_type(residue, etype)):
            if not isinstance(node, nodes.Check) or is_process_check(node):
                continue
            fields = _operand_fields(node)
            if any(is_fixed(f) for f in fields):
                return f"`{node}` compares a process field with an event field"
            if all(f.name.startswith(("proc.", "user.", "group.", "thread.")) for f in fields):
                return (f"`{node}`: {node.field.key} can change after exec (or is not the "
                        "process's own), so it cannot be decided once at exec")
            try:
                _cached_literal(node, _family(etype))
            except Ineligible as exc:
                return str(exc)
    return None

def ancestor_depth(expr: nodes.Expr) -> int:
    """How many ancestors the condition reads (parent = 1); -1 for the whole chain."""
    depth = 0
    for node in nodes.walk(expr):
        if not isinstance(node, nodes.Check):
            continue
        for f in _operand_fields(node):
            if f.name in ANCESTOR_FIELDS:
                depth = max(depth, 1) if depth >= 0 else depth
            elif f.name in ANCESTOR_CHAINS:
                if f.arg is not None and f.arg.isdigit():
                    depth = max(depth, int(f.arg)) if depth >= 0 else depth
                else:
                    depth = -1
    return depth


def process_fields(expr: nodes.Expr) -> list[str]:
    """The fixed process fields (keys) the condition reads, in first-use order."""
    seen: dict[str, None] = {}
    for node in nodes.walk(expr):
        if isinstance(node, nodes.Check) and is_process_check(node):
            for f in _operand_fields(node):
                seen.setdefault(f.key)
    return list(seen)


# --- the children of a known process ------------------------------------------------------
# A process that has just exec'd is unknown to userspace for a while (its exec record is
# still on its way), but everything the rules read about it is known except its own image:
# its ancestors are its parent's chain, its container and user its parent's (the kernel
# checks both). The only own field the kernel knows at exec is its comm (proc.name). So
# for each known process, userspace precomputes a template: the residue for every comm
# the rule names, and for any other comm; the kernel applies it at exec and fork.
CHILD_OWN = frozenset({"proc.name", "proc.exe", "proc.exepath", "proc.cmdline", "proc.args",
                       "proc.pid", "proc.vpid", "proc.tty", "proc.is_exe_from_memfd",
                       "proc.pid.ts"})
COMM_LEN = 15  # the kernel's comm: at most 15 bytes
SOME_COMM = object()  # child_decider: leave the checks that depend on the comm undecided


_NAME_FIELDS = ("proc.name", "proc.pname", "proc.aname")
_CMDLINE_FIELDS = ("proc.cmdline", "proc.pcmdline", "proc.acmdline")


def comm_literals(expr: nodes.Expr) -> set[str]:
    """The comms the condition singles out: literals compared with a process name (its
    own, its parent's, an ancestor's) and the first words of command-line prefixes
    (`proc.cmdline startswith "perl /usr/bin/x"` needs comm perl)."""
    out: set[str] = set()
    for node in nodes.walk(expr):
        if not isinstance(node, nodes.Check) or not isinstance(node.left, nodes.Field):
            continue
        name = node.left.name
        if name not in _NAME_FIELDS and name not in _CMDLINE_FIELDS:
            continue
        if isinstance(node.right, nodes.Value):
            texts = [node.right.text]
        elif isinstance(node.right, nodes.ValueList):
            texts = [v.text for v in node.right.items]
        else:
            continue
        for t in texts:
            word = t.split(" ", 1)[0] if name in _CMDLINE_FIELDS else t
            if 0 < len(word.encode()) <= COMM_LEN:
                out.add(word)
    return out


def comm_prefixes(expr: nodes.Expr) -> set[str]:
    """The prefixes the condition checks a process name against (`proc.aname[1] startswith
    google_accounts`). The kernel's template for "any other comm" holds only for a comm
    that starts with none of them (it checks), so such a check is decided there too."""
    out: set[str] = set()
    for node in nodes.walk(expr):
        if (isinstance(node, nodes.Check) and isinstance(node.left, nodes.Field)
                and node.left.name in _NAME_FIELDS and node.op == "startswith"
                and isinstance(node.right, nodes.Value)
                and 0 < len(node.right.text.encode()) <= COMM_LEN):
            out.add(node.right.text)
    return out


class _Known:
    """An Event of the child's known fields (`get` of an unknown field is a bug)."""

    def __init__(self, values: dict[str, Any]):
        self.values = values

    def get(self, key: str, default: Any = None) -> Any:
        v = self.values.get(key)
        return default if v is None else v


KNOWN = object()  # child_decider: the parent is a known process (fields from `known`)
_OWN_NAME = ("proc.name", "proc.aname[0]")
_PARENT_NAME = ("proc.pname", "proc.aname[1]")
_PARENT_CMDLINE = ("proc.pcmdline", "proc.acmdline[1]")
_PARENT_OTHER = ("proc.pexe", "proc.pexepath", "proc.ppid", "proc.apid[1]", "proc.aexe[1]",
                 "proc.aexepath[1]", "proc.aname", "proc.acmdline", "proc.apid", "proc.aexe",
                 "proc.aexepath")


def child_decider(known: Callable[[str], tuple[bool, Any]], comm: Any,
                  parent: Any = KNOWN, prefixes: frozenset[str] = frozenset()) -> Decider:
    """Decides the checks of a child of a known process whose comm is `comm` (None: any
    comm outside comm_literals() that has no space and starts with none of `prefixes`
    (comm_prefixes()); the kernel checks both; SOME_COMM: leave what depends on the comm
    undecided).

    `parent` is KNOWN for a child of the known process; for a grandchild it is the comm of
    the child in between (same conventions as `comm`), whose own fields are unknown.
    `known(key)` -> (whether the field is known from the known process, its value)."""
    def decide(check: nodes.Check) -> bool | None:
        value = constant(check)
        if value is not None:
            return value
        if not is_process_check(check):
            return None
        fields = _operand_fields(check)
        values: dict[str, Any] = {}
        for f in fields:
            key = f.key
            level = comm
            if key in _OWN_NAME or key == "proc.cmdline":
                pass
            elif parent is not KNOWN and (key in _PARENT_NAME or key in _PARENT_CMDLINE):
                level = parent
            elif parent is not KNOWN and key in _PARENT_OTHER:
                return None
            else:
                ok, v = known(key)
                if not ok:
                    return None
                values[f.key] = v
                continue
            if level is SOME_COMM or len(fields) > 1:
                return None
            if key in _OWN_NAME or key in _PARENT_NAME:
                if level is None:
                    return _other_comm(check, prefixes)
                values[f.key] = level
            else:
                return _cmdline(check, level)
        return _run(check, _Known(values))
    return decide


def _other_comm(check: nodes.Check, prefixes: frozenset[str]) -> bool | None:
    """proc.name against literals, for a comm that is none of them and starts with none of
    `prefixes`."""
    if not isinstance(check.left, nodes.Field) or isinstance(check.right, nodes.FieldValue):
        return None
    if check.op in ("=", "==", "in"):
        return False
    if check.op == "!=":
        return True
    if (check.op == "startswith" and isinstance(check.right, nodes.Value)
            and check.right.text in prefixes):
        return False
    return None


def _cmdline(check: nodes.Check, comm: str | None) -> bool | None:
    """proc.cmdline is the comm, then (when there are arguments) a space and the
    arguments: some prefixes and substrings are decided by the comm alone."""
    if (not isinstance(check.left, nodes.Field) or check.left.arg is not None
            or not isinstance(check.right, nodes.Value)):
        return None
    s = check.right.text
    if check.op == "startswith":
        if comm is None:  # a comm without spaces outside comm_literals()
            return False if " " in s else None
        if s.startswith(comm):
            if len(s) == len(comm):
                return True
            return None if s[len(comm)] == " " else False
        return True if comm.startswith(s) else False
    if check.op == "contains" and comm is not None and s in comm:
        return True
    return None


# --- detection: what a process's own fields leave of each rule (issue 17) ----------------
# The detection filter (enforcer.kernel.detection_masks) drops, in the kernel, the syscalls of a
# process for which every rule reduces to false on that process's fields. Its kernel check
# sees the comm, uid, gid and cgroup id of the calling thread and the exec (or fork) the
# process is at, not its ancestors' stamps: so only the fields those pin down are decided
# here, and the rest (ancestors, cwd, session, loginuid, capabilities, environment...)
# stays in the residue, where it may hold. Wider, never narrower.
DETECTION_FIXED = FIXED - ANCESTOR_FIELDS - ANCESTOR_CHAINS
# container fields decided only once the container's metadata is in (see detection_decider);
# labels and annotations of a pod can change while it runs: never decided
_CONTAINER_ID = frozenset({"container.id", "container.full_id"})
_MUTABLE_K8S = ("label", "annotation")
_NAMES_IN_CONTAINER = frozenset({"user.name", "group.name"})


def detection_fixed(f: nodes.Field, container: int) -> bool:
    """Whether detection_decider decides checks on `f` (`container`: CONTAINER_*)."""
    name = f.name
    if name in _NAMES_IN_CONTAINER:  # looked up in the container's own files
        return container != CONTAINER_UNKNOWN
    if name in DETECTION_FIXED:
        return True
    if not name.startswith(FIXED_PREFIXES):
        return False
    if any(word in name for word in _MUTABLE_K8S):
        return False
    return container == CONTAINER_KNOWN or (container == CONTAINER_ID_ONLY
                                            and name in _CONTAINER_ID)


CONTAINER_UNKNOWN = 0  # which container the cgroup id is, is not known yet
CONTAINER_ID_ONLY = 1  # known, its metadata is not in yet
CONTAINER_KNOWN = 2  # known with its metadata, or the host


def detection_decider(event: Any, container: int) -> Decider:
    """Decides the checks on the fields the detection filter's kernel check pins down
    (DETECTION_FIXED; container.* and k8s.* as far as `container` says they are known
    for good), with the engine's own operator code on `event`; every other check stays
    undecided."""
    def decide(check: nodes.Check) -> bool | None:
        value = constant(check)
        if value is not None:
            return value
        if not all(detection_fixed(f, container) for f in _operand_fields(check)):
            return None
        return _run(check, event)
    return decide
