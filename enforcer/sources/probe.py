"""The BPF program text: `render(config)` fills bpf/events.c's placeholders and generates one
enter/exit handler pair per watched syscall from the table in `syscalls.py`. Pure: no
kernel needed, so `enforcer probes render` and the unit tests see exactly what is loaded."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from enforcer.resources import bpf_dir
from enforcer.sources import syscalls as sc

PATH_SIZE = 256
ARGV_HALF = 512
SADDR_SIZE = 128
LPM_DATA = 128
MAX_ARGV = 20
SUFFIX_LEN = 32
MAX_SUFFIXES = 16

# Open classes (open_class() in events.c): bit 0 readable, 1 writable, 2 O_TRUNC, 3 O_CREAT.
# A map value is a 16-bit set of classes.
def classes(pred: Callable[[int], int]) -> int:
    """The class set (bitmap) of the classes whose bits satisfy `pred`."""
    return sum(1 << c for c in range(16) if pred(c))


ALL_CLASSES = 0xFFFF
READABLE = classes(lambda c: c & 1)
WRITABLE = classes(lambda c: c & 2)
TRUNCATING = classes(lambda c: c & 4)
CREATING = classes(lambda c: c & 8)


@dataclass(frozen=True)
class ProbeConfig:
    """What to watch and how to filter it in the kernel."""

    syscalls: tuple[str, ...] = tuple(s.name for s in sc.SYSCALLS)
    agent_tgid: int = 0  # events of this process are dropped in the kernel
    # Absolute-path prefixes (exact paths end with "\0") -> set of open classes that matter;
    # None means "no open filter, emit every open".
    open_prefixes: dict[str, int] | None = None
    # Path suffixes (at most MAX_SUFFIXES, each at most SUFFIX_LEN bytes) -> open classes;
    # an open passes when its prefix or its suffix matches. Only with open_prefixes.
    open_suffixes: dict[str, int] = field(default_factory=dict)
    # sendto/sendmsg without a destination address are dropped in the kernel (the rules
    # only look at sends that name a peer: fd.name_changed=true)
    sends_need_address: bool = False
    # syscalls whose failed calls (-1..-MAX_ERRNO) no rule can match: dropped at exit before
    # anything else is read; opens only when their raw path is absolute, at most LPM_DATA
    # bytes and without `..` (enforcer.kernel.results_filter)
    failures_dropped: tuple[str, ...] = ()
    ringbuf_pages: int = 4096  # 16 MiB with 4 KiB pages
    # records per CPU between wake-ups of the reader (1: the kernel's adaptive wake-up, as
    # soon as the reader has caught up). Above 1 the reader drains on a 10 ms timer too
    # (EbpfSource.max_wait_ms): fewer interrupts and context switches per record, but an
    # isolated event waits up to 10 ms, which a userspace kill (p99 <= 5 ms) cannot afford
    wakeup_every: int = 1
    stash_entries: int = 16384
    # Every syscall but exec: one handler at exit that reads the arguments from the task's
    # saved user registers (bpf_task_pt_regs, Linux 5.15+ with BTF; x86_64 and arm64)
    # instead of an enter handler that stashes them for the exit one. Each syscall
    # tracepoint hit costs the task ~50 ns before any program runs, so this halves what
    # the probes add to an open, a connect, a send... False: the enter+exit pair (older
    # kernels; EbpfSource.open falls back to it when the kernel refuses the exit handler).
    args_at_exit: bool = True
    # syscalls of sc.FD_STATE that no loaded rule asks for: attached for the descriptor
    # table only, their records reduced in the kernel to what it needs (fd_state())
    state_only: tuple[str, ...] = ()
    fd_tracked_entries: int = 65536
    # where the running kernel keeps what fd_sock() in events.c reads (the OFF_* of
    # enforcer.sources.kernel_btf): the two ends of a connect's or accept's socket are
    # read from the socket itself. None: from sock:inet_sock_set_state (no BTF)
    sock_offsets: dict[str, int] | None = None
    # per-process detection masks (enforcer.kernel.detection_masks): a process's records of the
    # syscalls no rule can match for it are dropped in the kernel (quiet_drop in events.c).
    # Off by default for now: with them on, tests/system/test_upstream_more_rules.py's
    # control rule misses the exec alerts of two of its podman containers (not understood
    # yet; the same test passes with them off)
    quiet_masks: bool = False
    quiet_entries: int = 65536
    extra_defines: dict[str, str] = field(default_factory=dict)


# the syscalls a detection mask may quiet (enforcer.kernel.detection_masks.ALWAYS never are)
_NEVER_QUIET = sc.LIFECYCLE | frozenset(s.name for s in sc.SYSCALLS if s.family == "cred")
QUIET_BIT = {s.name: i for i, s in enumerate(sc.SYSCALLS) if s.name not in _NEVER_QUIET}


def _quiet(s: sc.Syscall, leave: list[str]) -> list[str]:
    """C lines of the mask check (quiet_drop) with the record's uid and gid: a descriptor-
    state syscall keeps `quiet` for fd_state() (its records are then reduced to what the
    table needs), any other leaves (`leave`) when its process is quiet for it."""
    if s.name not in QUIET_BIT:
        return []
    call = f"quiet_drop({QUIET_BIT[s.name]}, e->uid, e->gid)"
    if s.name in sc.FD_STATE:
        return [f"    int quiet = {call};"]
    return [f"    if ({call}) {{", *leave, "    }"]


def _enter(s: sc.Syscall, code: int) -> list[str]:
    out = [f"TRACEPOINT_PROBE(syscalls, sys_enter_{s.name}) {{"]
    if s.family == "open":
        # path and flags first: most opens are dropped here, before anything else is
        # asked of the kernel (even whose they are: the agent's are dropped after)
        out += _open_body(s, code, lambda name: f"args->{name}", quiet=False)
        out += ["    return stash_it(e, e->tid);", "}", ""]
        return out
    out += _body(s, code, lambda name: f"args->{name}")
    key = "EXEC_KEY(e->tgid)" if s.family == "exec" else "e->tid"
    out += [f"    return stash_it(e, {key});", "}", ""]
    return out


def _body(s: sc.Syscall, code: int, arg: Callable[[str], str], regs: bool = False,
          state: list[str] | None = None, quiet: list[str] | None = None) -> list[str]:
    """A (non-open) handler's record up to what the exit adds: header, arguments, paths,
    argv, addresses; `arg(name)` is the C expression of an argument (`regs`: it reads
    the saved registers, which the handler fetches first); `state`: the descriptor
    table's step (fd_state()), right after the arguments, before anything costly."""
    out = [
        "    if (is_agent(bpf_get_current_pid_tgid()))",
        "        return 0;",
        *(["    struct pt_regs *regs = syscall_regs();"] if regs else []),
        f"    struct event_t *e = start_syscall({code});",
        "    if (!e)",
        "        return 0;",
    ]
    for i, a in enumerate(s.ints):
        out.append(f"    e->a[{i}] = (s64){arg(a.tp)};")
    out += quiet or []
    out += state or []
    if s.s1:
        out.append(f"    read_path1(e, (const char *){arg(s.s1[0])});")
    if s.s2:
        out.append(f"    read_path2(e, (const char *){arg(s.s2[0])});")
    if s.argv:
        out.append(f"    read_argv(e, (const char *const *){arg(s.argv)});")
    if s.saddr:
        ptr, length = s.saddr
        out.append(f"    read_saddr(e, (const void *){arg(ptr)}, (long){arg(length)});")
    if s.msghdr:
        out.append(f"    read_msghdr_name(e, (const void *){arg(s.msghdr)});")
    if s.name in ("sendto", "sendmsg"):
        out += ["    if (SENDS_NEED_ADDRESS && e->saddr_len == 0)", "        return 0;"]
    return out


def _open_body(s: sc.Syscall, code: int, arg: Callable[[str], str],
               quiet: bool = True) -> list[str]:
    """An open-family handler up to its arguments in the record: the path and flags, the
    in-kernel filter, then the header; `arg(name)` is the C expression of an argument."""
    out = ["    struct event_t *e = scratch_get();", "    if (!e)", "        return 0;",
           f"    read_path1(e, (const char *){arg(s.s1[0])});"]  # type: ignore[index]
    names = [a.tp for a in s.ints]
    if s.open_how:
        out += ["    long flags = 0;",
                f"    bpf_probe_read_user(&flags, sizeof(flags), (const void *){arg('how')});"]
    elif "flags" in names:
        out.append(f"    long flags = (long){arg('flags')};")
    else:
        out.append("    long flags = 0x241;  // creat(2) is open(O_WRONLY|O_CREAT|O_TRUNC)")
    out += ["    if (!open_wanted(e, flags))", "        return 0;",
            f"    fill_header(e, {code});",
            "    if (e->tgid == AGENT_TGID)", "        return 0;"]
    if quiet:
        out += _quiet(s, ["        return 0;"])
    for i, a in enumerate(s.ints):
        value = "flags" if a.tp == "how" else f"(s64){arg(a.tp)}"
        out.append(f"    e->a[{i}] = {value};")
    return out


def _open_flags_index(s: sc.Syscall) -> int | None:
    names = [a.tp for a in s.ints]
    if "flags" in names:
        return names.index("flags")
    if "how" in names:
        return names.index("how")
    return None


MAX_ERRNO = 150  # enforcer.kernel.results_filter.MAX_ERRNO


def _failed(s: sc.Syscall, ret: str) -> str:
    """C condition: a failed call that no rule can match (see ProbeConfig.failures_dropped)."""
    cond = f"{ret} < 0 && {ret} >= -{MAX_ERRNO}"
    if s.family == "open":
        cond += (" && e->path1[0] == '/' && e->len1 <= LPM_DATA"
                 " && !has_dotdot(e->path1, e->len1 - 1)")
    return cond


def _drop_failed_open(s: sc.Syscall, out: list[str], ret: str, cleanup: str = "") -> list[str]:
    """`out` (an open handler) with the failed-call drop right after the path filter."""
    at = next(i for i, line in enumerate(out) if "open_wanted(" in line) + 2
    if "{" in out[at - 2]:  # the exit handler's block form: after its closing brace
        at = next(i for i in range(at, len(out)) if out[i] == "    }") + 1
    return out[:at] + [f"    if ({_failed(s, ret)}) {{", *([cleanup] if cleanup else []),
                       "        return 0;", "    }"] + out[at:]


F_DUPFD, F_SETFD, F_DUPFD_CLOEXEC = 0, 2, 1030
CLOSE_RANGE_CLOEXEC = 4
FORK_COPY_FDS = 64  # events.c: the numbers whose keys the kernel copies and drops itself
EINPROGRESS = 115


def fd_state(s: sc.Syscall, ret: str, only: bool, leave: list[str],
             quiet: bool = False) -> list[str]:
    """C lines that keep the kernel's set of tracked descriptors (fd_tracked in events.c)
    for one of sc.FD_STATE, with the record's arguments in e->a[] and the result in `ret`.
    `only` (no rule asks for this syscall): `leave` (lines that return without emitting)
    unless the record changes the descriptor table: a socket made, bound or connected,
    a tracked descriptor duplicated, closed, or its close-on-exec flag set. `quiet`: the
    same at run time when the C variable `quiet` is set (the process's detection mask,
    _quiet()). Slot 5 says when the tracked set was full (fd_track)."""
    if s.name not in sc.FD_STATE:
        return []
    tg = "e->tgid"
    out: list[str] = []

    def unless(cond: str) -> None:
        if only:
            out.extend([f"    if (!({cond})) {{", *leave, "    }"])
        elif quiet:  # a process quiet for it (quiet_drop): as if no rule asked
            out.extend([f"    if (quiet && !({cond})) {{", *leave, "    }"])

    name = s.name
    if name in ("socket", "accept", "accept4"):
        unless(f"{ret} >= 0")
        out += [f"    if ({ret} >= 0)", f"        e->a[5] = fd_track({tg}, {ret});"]
    elif name in ("socketpair", "pipe", "pipe2"):
        # the two new numbers, which the kernel just wrote to the caller's array
        unless(f"{ret} == 0")
        vec = 3 if name == "socketpair" else 0
        out += [f"    if ({ret} == 0) {{",
                "        int sv[2] = {-1, -1};",
                f"        bpf_probe_read_user(sv, sizeof(sv), (const void *)e->a[{vec}]);",
                "        e->a[4] = (u32)sv[0] | ((u64)(u32)sv[1] << 32);",
                f"        e->a[5] = fd_track({tg}, sv[0]) | fd_track({tg}, sv[1]);",
                "    }"]
    elif name == "bind":
        unless(f"{ret} == 0")
    elif name == "connect":
        unless(f"{ret} == 0 || {ret} == -{EINPROGRESS}")
        out.append(f"    if ({ret} == 0 || {ret} == -{EINPROGRESS})")
        out.append("        connect_tuple(e, e->a[0]);")
    elif name in ("dup", "dup2", "dup3", "fcntl"):
        out.append(f"    int old_tracked = fd_is_tracked({tg}, e->a[0]);")
        # a child userspace has not synced yet: its copies are not in fd_tracked
        out.append(f"    int unsynced = fd_unsynced_now({tg});")
        if name == "fcntl":
            out.append(f"    int makes_fd = e->a[1] == {F_DUPFD} || e->a[1] == {F_DUPFD_CLOEXEC};")
            unless(f"{ret} >= 0 && (old_tracked || unsynced)"
                   f" && (makes_fd || e->a[1] == {F_SETFD})")
            out += [f"    if ({ret} >= 0 && makes_fd && old_tracked)",
                    f"        e->a[5] = fd_track({tg}, {ret});"]
        else:
            # dup2/dup3 close the new descriptor first: its entry goes too
            replaced = f"fd_is_tracked({tg}, e->a[1])" if name != "dup" else "0"
            out.append(f"    int new_tracked = {replaced};")
            unless(f"{ret} >= 0 && (old_tracked || new_tracked || unsynced)")
            out += [f"    if ({ret} >= 0 && old_tracked)",
                    f"        e->a[5] = fd_track({tg}, {ret});",
                    f"    else if ({ret} >= 0 && new_tracked)",
                    f"        fd_untrack({tg}, {ret});"]
    elif name == "close":
        # the descriptor is gone whatever close returns (but EBADF: it was not there)
        out.append(f"    int was_tracked = fd_is_tracked({tg}, e->a[0]);")
        unless(f"was_tracked || fd_unsynced_now({tg})")
        out += ["    if (was_tracked)", f"        fd_untrack({tg}, e->a[0]);"]
    elif name == "close_range":
        unless(f"{ret} == 0")  # userspace drops the range (and the keys from FORK_COPY_FDS)
        out += [f"    if ({ret} == 0 && !(e->a[2] & {CLOSE_RANGE_CLOEXEC}))",
                f"        fd_untrack_range({tg}, e->a[0], e->a[1]);"]
    return out


def fd_state_model(name: str, ints: tuple[int, ...], ret: int, tracked: set[int],
                   unsynced: bool = False) -> bool:
    """A model of fd_state() for a state-only syscall, step for step: whether its record
    crosses, with `tracked` (the calling process's tracked descriptors, fd_tracked)
    updated as the kernel updates it; `unsynced`: a child whose fork userspace has not read
    yet (fd_unsynced). The property test in
    tests/unit/agent/test_kernel_filter_soundness.py holds it to the fd table: fed only
    the records that cross, the table ends as it would have with every record."""
    def s32(v: int) -> int:
        v &= 0xFFFFFFFF
        return v - (1 << 32) if v & 0x80000000 else v

    if name in ("socket", "accept", "accept4"):
        if ret >= 0:
            tracked.add(ret)
        return ret >= 0
    if name in ("socketpair", "pipe", "pipe2"):
        return ret == 0  # the pair's numbers come from user memory: the caller adds them
    if name == "bind":
        return ret == 0
    if name == "connect":
        return ret in (0, -EINPROGRESS)
    if name == "close_range":
        if ret == 0 and not ints[2] & CLOSE_RANGE_CLOEXEC:
            lo, hi = ints[0] & 0xFFFFFFFF, ints[1] & 0xFFFFFFFF
            tracked.difference_update({fd for fd in tracked if lo <= fd <= hi
                                       and fd < FORK_COPY_FDS})
        return ret == 0
    fd = s32(ints[0])
    old = fd >= 0 and fd in tracked
    if name == "close":
        tracked.discard(fd)
        return old or unsynced
    if name == "fcntl":
        makes_fd = ints[1] in (F_DUPFD, F_DUPFD_CLOEXEC)
        if ret >= 0 and makes_fd and old:
            tracked.add(ret)
        return ret >= 0 and (old or unsynced) and (makes_fd or ints[1] == F_SETFD)
    new = name != "dup" and s32(ints[1]) >= 0 and s32(ints[1]) in tracked
    if ret >= 0 and old:
        tracked.add(ret)
    elif ret >= 0 and new:
        tracked.discard(ret)
    return ret >= 0 and (old or new or unsynced)


def fork_fds_model(parent_tracked: set[int], parent_max: int | None) -> tuple[set[int], bool]:
    """A model of fork_fds() in events.c: the child's tracked descriptors as the kernel
    keys them before the child runs (the parent's, up to the highest number the parent
    ever tracked, below FORK_COPY_FDS), and whether the child is marked unsynced (the
    parent ever tracked a higher number). `parent_max`: fd_holders' value, None when the
    parent never tracked one."""
    if parent_max is None:
        return set(), False
    return ({fd for fd in parent_tracked if fd <= parent_max and fd < FORK_COPY_FDS},
            parent_max >= FORK_COPY_FDS)


def _exit(s: sc.Syscall, drop_failed: bool = False, only: bool = False,
          quiet_masks: bool = True) -> list[str]:
    key = ("EXEC_KEY((u32)(bpf_get_current_pid_tgid() >> 32))" if s.family == "exec"
           else "(u32)bpf_get_current_pid_tgid()")
    out = [
        f"TRACEPOINT_PROBE(syscalls, sys_exit_{s.name}) {{",
        f"    u32 key = {key};",
        "    struct event_t *e = unstash(key);",
        "    if (!e)",
        "        return 0;",
    ]
    if drop_failed and s.family != "open":
        out += [f"    if ({_failed(s, 'args->ret')}) {{", "        drop_stash(key);",
                "        return 0;", "    }"]
    leave = ["        drop_stash(key);", "        return 0;"]
    quiet = _quiet(s, leave) if quiet_masks and not only else []
    out += quiet
    out += fd_state(s, "args->ret", only, leave, quiet=bool(quiet))
    if s.family == "exec":
        # a failed exec changes nothing: the process keeps its image, rules see nothing
        out += [
            "    if (args->ret != 0) {",
            "        drop_stash(key);",
            "        return 0;",
            "    }",
        ]
    names = [a.tp for a in s.ints]
    if s.s1 or s.s2:
        out.append("    reread_paths(e);")
    if s.family == "open":
        flags_idx = _open_flags_index(s)
        flags = f"e->a[{flags_idx}]" if flags_idx is not None else "0x241"
        out += [
            f"    if (!open_wanted(e, {flags})) {{",
            "        drop_stash(key);",
            "        return 0;",
            "    }",
        ]
        if drop_failed:
            out = _drop_failed_open(s, out, "args->ret", "        drop_stash(key);")
    if s.saddr_exit:
        p, lp = (names.index(n) for n in s.saddr_exit)
        out.append(f"    read_saddr_lenptr(e, (const void *)e->a[{p}], (const int *)e->a[{lp}]);")
        if s.name in ("accept", "accept4"):
            out.append("    accept_tuple(e, args->ret);")
    if s.msghdr_exit:
        out.append(f"    read_msghdr_name(e, (const void *)e->a[{names.index(s.msghdr_exit)}]);")
    out += [
        "    bpf_get_current_comm(e->comm, sizeof(e->comm));",
        f"    {'finish_exec' if s.family == 'exec' else 'finish'}(e, args->ret, key);",
        "    return 0;",
        "}",
        "",
    ]
    return out


def _at_exit(s: sc.Syscall, code: int, drop_failed: bool = False,
             only: bool = False, quiet_masks: bool = True) -> list[str]:
    """One exit handler instead of the enter+exit pair: the arguments come from the saved
    registers (still the caller's at exit: the kernel only writes the return value), the
    record is built and emitted at once, with the result. Not for exec: its arguments
    live in the memory the new image replaced."""
    pos = {name: i for i, name in enumerate(sc.ARG_ORDER[s.name])}

    def arg(name: str) -> str:
        return f"syscall_arg(regs, {pos[name]})"

    out = [f"TRACEPOINT_PROBE(syscalls, sys_exit_{s.name}) {{"]
    if s.family == "open":
        body = ["    struct pt_regs *regs = syscall_regs();",
                *_open_body(s, code, arg, quiet=quiet_masks)]
        out += _drop_failed_open(s, body, "args->ret") if drop_failed else body
    else:
        if drop_failed:  # before anything is read
            out += [f"    if ({_failed(s, 'args->ret')})", "        return 0;"]
        if only and s.name == "close":  # most closes: one lookup (and an array's)
            out += ["    u32 tgid = bpf_get_current_pid_tgid() >> 32;",
                    "    if (!fd_is_tracked(tgid, (long)(int)syscall_arg(syscall_regs(), 0))",
                    "            && !fd_unsynced_now(tgid))",
                    "        return 0;"]
        quiet = _quiet(s, ["        return 0;"]) if quiet_masks and not only else []
        out += _body(s, code, arg, regs=True, quiet=quiet,
                     state=fd_state(s, "args->ret", only, ["        return 0;"],
                                    quiet=bool(quiet)))
    names = [a.tp for a in s.ints]
    if s.saddr_exit:
        p, lp = (names.index(n) for n in s.saddr_exit)
        out.append(f"    read_saddr_lenptr(e, (const void *)e->a[{p}], (const int *)e->a[{lp}]);")
        if s.name in ("accept", "accept4"):
            out.append("    accept_tuple(e, args->ret);")
    if s.msghdr_exit:
        out.append(f"    read_msghdr_name(e, (const void *)e->a[{names.index(s.msghdr_exit)}]);")
    out += ["    bpf_get_current_comm(e->comm, sizeof(e->comm));",
            "    emit_result(e, args->ret);",
            "    return 0;",
            "}",
            ""]
    return out


def _ret_once(lines: list[str]) -> list[str]:
    """A handler that reads args->ret once, into a local: clang keeps the address of a
    context field it reads twice in a register, and the verifier refuses a dereference of
    a modified context pointer."""
    return [lines[0], "    long rv = args->ret;",
            *(line.replace("args->ret", "rv") for line in lines[1:])]


def handlers(names: tuple[str, ...], failures_dropped: tuple[str, ...] = (),
             state_only: tuple[str, ...] = (), quiet_masks: bool = True) -> str:
    """C source of the handlers for these syscalls (table order). All but exec get both
    forms, the exit-only handler and the enter+exit pair, chosen by the preprocessor
    (ARGS_AT_EXIT in events.c)."""
    lines: list[str] = []
    wanted = set(names)
    for s in sc.SYSCALLS:
        if s.name not in wanted:
            continue
        only = s.name in state_only
        # a state-only syscall's own step keeps what the table needs of its failures
        drop = s.name in failures_dropped and s.family != "exec" and not only
        exit_ = _exit(s, drop, only, quiet_masks)
        at_exit = _at_exit(s, sc.CODES[s.name], drop, only, quiet_masks)
        if s.name in sc.FD_STATE:
            exit_, at_exit = _ret_once(exit_), _ret_once(at_exit)
        pair = _enter(s, sc.CODES[s.name]) + exit_
        if s.family != "exec":
            lines += ["#if ARGS_AT_EXIT", *at_exit, "#else",
                      *pair, "#endif", ""]
        else:
            lines += pair
    return "\n".join(lines)


def render(config: ProbeConfig) -> str:
    """The exact C text bcc compiles for this configuration."""
    if len(config.open_suffixes) > MAX_SUFFIXES or any(
            len(x.encode()) > SUFFIX_LEN for x in config.open_suffixes):
        raise ValueError(f"at most {MAX_SUFFIXES} open suffixes of {SUFFIX_LEN} bytes")
    unknown = sorted(set(config.syscalls) - set(sc.BY_NAME))
    if unknown:
        raise ValueError(f"no probe for syscalls: {', '.join(unknown)}")
    template = (bpf_dir() / "events.c").read_text()
    values = {
        "ARGV_HALF_SIZE": str(ARGV_HALF),
        "PATH_MAX_SIZE": str(PATH_SIZE),
        "LPM_DATA_SIZE": str(LPM_DATA),
        "RINGBUF_PAGES": str(config.ringbuf_pages),
        "STASH_ENTRIES": str(config.stash_entries),
        "OPEN_PREFIX_ENTRIES": str(max(1, len(config.open_prefixes or ()))),
        "OPEN_FILTER_ENABLED": "0" if config.open_prefixes is None else "1",
        "OPEN_SUFFIX_COUNT": str(len(config.open_suffixes)),
        "OPEN_SUFFIX_CLASSES": hex(_union(config.open_suffixes.values())),
        # relative paths may resolve below any prefix: their classes always pass
        **_second_byte_words(config.open_prefixes or {}),
        "OPEN_PREFIX_CLASSES": hex(_union((config.open_prefixes or {}).values())),
        "OPEN_SUFFIX_ENTRIES": str(max(1, len(config.open_suffixes))),
        "AGENT_TGID_VALUE": str(int(config.agent_tgid)),
        "FD_TRACKED_ENTRIES": str(config.fd_tracked_entries),
        "SOCK_READS_ENABLED": "0" if config.sock_offsets is None else "1",
        "SOCK_OFFSET_DEFINES": "\n".join(
            f"#define {k} {int(v)}" for k, v in sorted((config.sock_offsets or {}).items())),
        "QUIET_MASKS_ENABLED": "1" if config.quiet_masks else "0",
        "QUIET_ENTRIES": str(config.quiet_entries),
        "MAX_ARGV": str(MAX_ARGV),
        "WAKEUP_EVERY_VALUE": str(wakeup_every(config)),
        "SENDS_NEED_ADDRESS": "1" if config.sends_need_address else "0",
        "AT_EXIT_WANTED": "1" if config.args_at_exit else "0",
        "DROP_SLOTS": str(sc.DROP_SLOTS),
        "EV_FORK": str(sc.EV_FORK),
        "EV_EXIT": str(sc.EV_EXIT),
        **config.extra_defines,
    }
    text = template.replace("HANDLERS", handlers(config.syscalls, config.failures_dropped,
                                                 config.state_only, config.quiet_masks))
    # longest first, so no placeholder is a prefix of one replaced before it
    for key in sorted(values, key=len, reverse=True):
        text = text.replace(key, values[key])
    return text


def second_bytes(prefixes: Iterable[str]) -> int:
    """The bitmap (256 bits) of the bytes right after the `/` of the prefixes."""
    bits = 0
    for prefix in prefixes:
        data = prefix.encode()
        if len(data) < 2:
            return (1 << 256) - 1  # "" or "/": every path may match
        bits |= 1 << data[1]
    return bits


def _second_byte_words(prefixes: dict[str, int]) -> dict[str, str]:
    """PREFIX_BYTE1_0..3: second_bytes() in four 64-bit words."""
    bits = second_bytes(prefixes)
    return {f"PREFIX_BYTE1_{i}": hex((bits >> (64 * i)) & (2**64 - 1)) + "ULL" for i in range(4)}


def wakeup_every(config: ProbeConfig) -> int:
    """Records per CPU between wake-ups of the reader: config.wakeup_every, but at most a
    sixteenth of what the ring buffer holds, so a small buffer is read long before it
    fills (1 = wake at every record)."""
    from enforcer.sources.decode import RECORD_SIZE  # noqa: PLC0415 - decode imports us

    capacity = config.ringbuf_pages * 4096 // (RECORD_SIZE + 8)  # 8: record header
    return max(1, min(config.wakeup_every, capacity // 16))


def _union(masks: Iterable[int]) -> int:
    out = 0
    for m in masks:
        out |= m
    return out


def lpm_key(prefix: str) -> tuple[int, bytes]:
    """(prefix length in bits, data) of an open_prefixes entry; exact paths end with NUL."""
    data = prefix.encode()[:LPM_DATA]
    return len(data) * 8, data.ljust(LPM_DATA, b"\0")
