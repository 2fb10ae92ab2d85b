"""Per-process detection masks (issue 17): only possible matches cross into userspace.

Whenever the process table changes what a process's own fields are (exec, fork, a new comm,
uid, gid or cgroup seen in one of its records, its container's metadata coming in, a
rule reload), every enabled rule is reduced to its residue on that process's fields,
with the in-kernel kill's partial evaluation (enforcer.kernel.residue.partial,
detection_decider). The syscalls for which no residue may hold form the process's quiet
set: the event probes (bpf/events.c, quiet_drop) drop those records in the kernel, except
what the process table and the descriptor table need (exec, chdir and the credential
syscalls always cross; the descriptor-state syscalls cross as they do when no rule asks for
them, probe.fd_state).

The kernel trusts an entry only while the calling thread's comm, uid, gid and cgroup id are
those it was computed with, and the process is still at the exec (or fork) it was computed
for: the kernel notes each process's last exec and fork by the record's timestamp (`born`),
which userspace reads from the same record. A process the kernel holds no entry for, or
one whose entry no longer fits, passes everything: wider, never narrower.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from enforcer.kernel import residue as pe
from enforcer.rules import checks
from enforcer.rules.evttypes import event_types
from enforcer.sources import syscalls as sc
from enforcer.state.containers import HOST_INFO, ContainerInfo
from enforcer.state.live_event import LiveEvent

log = logging.getLogger(__name__)

#: one bit per syscall of the probe table, in table order (events.c: SYSCALL_INDEX)
BIT = {s.name: 1 << i for i, s in enumerate(sc.SYSCALLS)}
_CRED = frozenset(s.name for s in sc.SYSCALLS if s.family == "cred")
#: never dropped by the mask: the process table needs them (exec and chdir change the
#: image and the cwd; a credential change makes the table read the capabilities again)
ALWAYS = sc.LIFECYCLE | _CRED
QUIETABLE = sum(bit for name, bit in BIT.items() if name not in ALWAYS)
ALL_BITS = sum(BIT.values())
MAX_CACHE = 4096


class MaskMaps(Protocol):
    """The kernel side (enforcer.adapters.bcc_probe.BccProbe)."""

    def put_quiet(self, tgid: int, quiet: int, born: int, uid: int, gid: int, cgroup: int,
                  comm: bytes) -> None: ...
    def delete_quiet(self, tgid: int) -> None: ...


@dataclass(frozen=True)
class Entry:
    """What the kernel holds for one process (bpf/events.c, struct quiet_t)."""

    quiet: int
    born: int
    uid: int
    gid: int
    cgroup: int
    comm: str


def may_bits(rules: Iterable[Any], event: Any, container: int) -> int:
    """The syscalls (BIT) for which some rule's residue on `event`'s process may hold."""
    decide = pe.detection_decider(event, container)
    bits = 0
    for rule in rules:
        residue = pe.partial(rule.expr, decide)
        if residue is False:
            continue
        types = rule.event_types
        narrowed = None if residue is True else event_types(residue)
        if narrowed is not None:
            types = narrowed if types is None else types & narrowed
        if types is None:
            return ALL_BITS
        for name in types:
            bits |= BIT.get(name, 0)
    return bits


def container_state(event: LiveEvent) -> int:
    """How much of the event's container is known for good (residue.CONTAINER_*).
    The event is given what the registry holds now as its container, so that nothing
    computed here asks the runtime or starts the set-aside hold of a container too early
    (a lookup before the runtime has described it would find nothing and hold no event)."""
    ctx = event._ctx  # noqa: SLF001 - the same lookups LiveEvent.cgroup makes
    ids = ctx.cgroup_ids
    unknown = ids is not None and ids.identity(event._f.get("_cgroup_id", 0)) is None  # noqa: SLF001
    ident = event.cgroup()
    if ident is None or not ident.full_id:
        event._container = HOST_INFO  # noqa: SLF001
        return pe.CONTAINER_UNKNOWN if unknown else pe.CONTAINER_KNOWN
    info = ctx.containers.peek(ident.full_id)
    if info is None or info.pending or info.name is None or not info.complete:
        event._container = ContainerInfo(id=ident.full_id[:12], full_id=ident.full_id,  # noqa: SLF001
                                         runtime=ident.runtime)
        return pe.CONTAINER_UNKNOWN if unknown else pe.CONTAINER_ID_ONLY
    event._container = info  # noqa: SLF001
    return pe.CONTAINER_UNKNOWN if unknown else pe.CONTAINER_KNOWN


def _decided_fields(rules: Iterable[Any]) -> list[str]:
    """The keys of every field some check of these rules may decide (detection_decider)."""
    seen: dict[str, None] = {}
    for rule in rules:
        for f in checks.used_fields(rule.expr):
            if pe.detection_fixed(f, pe.CONTAINER_KNOWN):
                seen.setdefault(f.key)
    return list(seen)


@dataclass
class DetectionMasks:
    """The kernel's per-process quiet sets, kept in step with the process table."""

    rules: list[Any]
    maps: MaskMaps | None = None
    agent_tgid: int = 0
    entries: dict[int, Entry] = field(default_factory=dict)
    born: dict[int, int] = field(default_factory=dict)  # tgid -> ts of its last exec/fork
    waiting_container: set[int] = field(default_factory=set)
    # tgid -> (comm, uid, gid, cgroup, born) of its last computation, whatever it gave
    computed_from: dict[int, tuple[str, int, int, int, int]] = field(default_factory=dict)
    cache: dict[tuple[Any, ...], int] = field(default_factory=dict)
    computed: int = 0  # masks computed (cache misses)
    needs_seed: bool = False  # new rules: every process to compute again (the loop does)
    # processes whose table view was read again from /proc (ProcessTable.on_reread)
    reread: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.fields = _decided_fields(self.rules)
        # a reload (another thread) against the loop's computations
        self.lock = threading.Lock()

    # --- what the agent calls ---------------------------------------------------------
    def use(self, maps: MaskMaps | None, ctx: Any, born_from: int = 0) -> None:
        """Write every process's mask to `maps` (new probes: their map starts empty).
        `born_from`: the probes' attach time; an exec or fork before it is unknown to them,
        so their entries say born 0 (what the kernel's lookup gives then)."""
        with self.lock:
            self.maps = maps
            self.entries.clear()
            self.computed_from.clear()
            if born_from:
                self.born = {pid: ts for pid, ts in self.born.items() if ts > born_from}
        self.seed(ctx)

    def reset(self, rules: Iterable[Any]) -> None:
        """New rules (from the reloading thread): every entry goes at once, so every
        process passes everything; the loop computes them again (seed_if_needed)."""
        with self.lock:
            self.rules = list(rules)
            self.fields = _decided_fields(self.rules)
            self.cache.clear()
            self.computed_from.clear()
            self.waiting_container.clear()
            for pid in list(self.entries):
                self._delete(pid)
            self.needs_seed = True

    def seed_if_needed(self, ctx: Any) -> None:
        if self.needs_seed:
            self.seed(ctx)

    def seed(self, ctx: Any) -> None:
        """A mask for every process the table holds (the cgroup id read from /proc: a
        process whose id cannot be read gets none)."""
        from enforcer.kernel.arming import cgroup_id  # noqa: PLC0415

        with self.lock:
            self.needs_seed = False
            mount = getattr(ctx.cgroup_ids, "mount", None)
            for pid in list(ctx.table._procs):  # noqa: SLF001 - a snapshot of the keys
                proc = ctx.table.get(pid)
                if proc is None or proc.pid != pid or proc.exited:
                    continue
                cgroup = cgroup_id(ctx.proc_root, pid, mount)
                if cgroup:
                    self._compute(ctx, proc, proc.comm, proc.uid, proc.gid, cgroup)

    def rearm_waiting(self, ctx: Any) -> None:
        """Container metadata came in: masks of processes that waited for it."""
        with self.lock:
            for pid in sorted(self.waiting_container):
                self.waiting_container.discard(pid)
                self._again(ctx, pid)

    def _again(self, ctx: Any, pid: int) -> None:
        seen = self.computed_from.get(pid)
        proc = ctx.table.get(pid)
        if seen is not None and proc is not None and proc.pid == pid and not proc.exited:
            self._compute(ctx, proc, proc.comm, seen[1], seen[2], seen[3])

    def watch(self, table: Any) -> None:
        """Compute again the masks of processes the table reads from /proc anew."""
        table.on_reread = self.reread.add

    def after(self, rec: dict[str, Any], ctx: Any) -> None:
        """Called after the tracker applied one record."""
        with self.lock:
            self._after(rec, ctx)

    def _after(self, rec: dict[str, Any], ctx: Any) -> None:
        while self.reread:
            self._again(ctx, self.reread.pop())
        code = rec.get("_code")
        pid = rec["proc.pid"]
        if code == sc.EV_EXIT:
            if rec.get("thread.tid", pid) == pid:
                # the kernel dropped its entry at the exit, unless this agent wrote one after
                # that from an older record: it goes, or it would stay until the pid's reuse
                self._delete(pid)
                self.born.pop(pid, None)
                self.computed_from.pop(pid, None)
                self.waiting_container.discard(pid)
            return
        uid, gid, cgroup = rec["user.uid"], rec["group.gid"], rec.get("_cgroup_id", 0)
        if code == sc.EV_FORK:
            child = rec["_child"]
            self.born[child] = rec.get("_ts_mono", 0)
            self.entries.pop(child, None)  # the kernel dropped it at the fork
            proc = ctx.table.get(child)
            if proc is not None and proc.pid == child:
                self._compute(ctx, proc, proc.comm, uid, gid, cgroup)
            return
        proc = ctx.table.get(pid)
        if proc is None or proc.pid != pid:
            return
        if rec.get("evt.type") in ("execve", "execveat"):
            self.born[pid] = rec.get("_ts_mono", 0)
            self.entries.pop(pid, None)  # the kernel dropped it at the exec
            self._compute(ctx, proc, proc.comm, uid, gid, cgroup)
            return
        if rec.get("thread.tid", pid) != pid:
            return  # another thread's name or creds: its records pass, the mask stays
        if self.computed_from.get(pid) != (proc.comm, uid, gid, cgroup, self.born.get(pid, 0)):
            self._compute(ctx, proc, proc.comm, uid, gid, cgroup)

    # --- computing ----------------------------------------------------------------------
    def compute(self, ctx: Any, proc: Any, comm: str, uid: int, gid: int,
                cgroup: int) -> Entry | None:
        """The process's entry, written to the kernel (None: it passes everything)."""
        with self.lock:
            return self._compute(ctx, proc, comm, uid, gid, cgroup)

    def _compute(self, ctx: Any, proc: Any, comm: str, uid: int, gid: int,
                 cgroup: int) -> Entry | None:
        pid = proc.pid
        self.computed_from[pid] = (comm, uid, gid, cgroup, self.born.get(pid, 0))
        if pid <= 1 or pid == self.agent_tgid or not comm:
            self._delete(pid)
            return None
        rec = {"proc.pid": pid, "thread.tid": pid, "user.uid": uid, "group.gid": gid,
               "_comm": comm, "_cgroup_id": cgroup, "_ts_mono": 0}
        event = LiveEvent(rec, ctx, proc)
        try:
            state = container_state(event)
            key = (state, *(_hashable(event.get(f)) for f in self.fields))
            may = self.cache.get(key)
            if may is None:
                may = may_bits(self.rules, event, state)
                self.computed += 1
                if len(self.cache) >= MAX_CACHE:
                    self.cache.clear()
                self.cache[key] = may
        except Exception:  # noqa: BLE001 - a failed reduction passes everything
            log.exception("detection mask of pid %s", pid)
            self._delete(pid)
            return None
        if state != pe.CONTAINER_KNOWN:  # computed again when metadata comes in
            self.waiting_container.add(pid)
        else:
            self.waiting_container.discard(pid)
        entry = Entry(QUIETABLE & ~may, self.born.get(pid, 0), uid, gid, cgroup, comm)
        if not entry.quiet:
            self._delete(pid)
            return None
        if self.entries.get(pid) != entry:
            self.entries[pid] = entry
            if self.maps is not None:
                self.maps.put_quiet(pid, entry.quiet, entry.born, uid, gid, cgroup,
                                    comm.encode()[:15])
        return entry

    def _delete(self, pid: int) -> None:
        if self.entries.pop(pid, None) is not None and self.maps is not None:
            self.maps.delete_quiet(pid)


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted(value.items()))
    return value


def kernel_drops(entry: Entry | None, syscall: str, comm: str, uid: int, gid: int,
                 cgroup: int, born: int) -> bool:
    """A model of quiet_drop() in bpf/events.c, step for step: whether the kernel drops a
    record of `syscall` made by a thread with this comm, uid, gid and cgroup id, of a
    process whose last exec or fork the kernel noted at `born` (0: none noted). The
    descriptor-state syscalls are then reduced as probe.fd_state_model says."""
    if entry is None or not (entry.quiet & BIT.get(syscall, 0)):
        return False
    return (entry.born == born and entry.uid == uid and entry.gid == gid
            and entry.cgroup == cgroup and entry.comm.encode()[:15] == comm.encode()[:15])
