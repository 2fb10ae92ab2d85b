"""Arms the in-kernel kill: for each process, the residue of every in_kernel rule.

At each exec (and fork of an armed process, and for every process found running at start)
the process's fixed fields are read from the process table, each rule is partially
evaluated (enforcer.kernel.residue), and the surviving conjuncts go to the kernel's kill map
for that tgid, together with the comm, uid, gid, cgroup and the stamps of the process and
of the ancestors the rules read. The kernel trusts the entry only while those are
unchanged (bpf/enforce.c).

A stamp is only recorded once the process table has applied the change it stands for:
the kernel stamps an exec at sched_process_exec, before the exec record (stamped at
sys_exit_execve) reaches us, so "our last applied exec of that pid is not older than the
stamp" proves the table is current. A fork is stamped in the same tracepoint as the fork
record, so a small tolerance is allowed there (a pid cannot be reused within it). Until
then the process is left unarmed and retried when the record is applied.

Admission (`admits(rule, get)`, from the responder): a rule is armed for a process only if a
policy that kills for it in the kernel would answer the process's workload now — not when
the policy's blast-radius breaker suspends it for new workloads (the workloads it already
answered stay armed), nor in a protected namespace. When the answer may have changed
(`generation()`), every armed or refused process is armed again from the agent's loop.
The agent, its ancestors and its descendants are never armed.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from actions.process import ancestors as proc_ancestors
from enforcer.kernel import residue as pe
from enforcer.kernel.kill_tables import MAX_DEPS, MAX_TEMPLATES, KillTables, TableFull
from enforcer.sources import syscalls as sc
from enforcer.state.live_event import LiveEvent

log = logging.getLogger(__name__)

STAMP_RENAMED = 1 << 61
STAMP_FORK = 1 << 62
STAMP_POISON = 1 << 63
FORK_TOLERANCE_NS = 1_000_000
UNCONFIRMED_AFTER_NS = 3_000_000_000
# a ring's records arrive within milliseconds; one a second late was lost
RESYNC_AFTER_NS = 1_000_000_000
_CONTAINER_DETAIL = ("container.name", "container.image", "container.privileged",
                     "container.mount", "container.start_ts", "container.type")


class KillMaps(Protocol):
    """What the arming needs from the kernel side (enforcer.adapters.bcc_enforce)."""

    def set_conj(self, index: int, classes: int, paths_all: int, paths_none: int,
                 types: int, results: int, uses_path: int, rule: int, ports_all: int = 0,
                 ports_none: int = 0, addrs_all: int = 0, addrs_none: int = 0,
                 uses_net: int = 0) -> None: ...
    def set_path(self, key: bytes, always: int, noslash: int) -> None: ...
    def set_ports(self, bits: dict[int, int]) -> None: ...
    def set_addr(self, prefixlen: int, key: bytes, bits: int) -> None: ...
    def put(self, tgid: int, conj: int, uid: int, gid: int, cgroup: int, comm: bytes,
            deps: list[tuple[int, int]]) -> None: ...
    def delete(self, tgid: int) -> None: ...
    def stamp(self, pid: int) -> tuple[int, int]: ...
    def set_template(self, tmpl: int, default: int, comms: dict[str, int],
                     child_default: int = -1, child_comms: dict[str, int] | None = None
                     ) -> None: ...
    def put_parent(self, tgid: int, tmpl: int, uid: int, gid: int, cgroup: int,
                   deps: list[tuple[int, int]]) -> None: ...
    def delete_parent(self, tgid: int) -> None: ...
    def set_comm_prefixes(self, prefixes: Iterable[str]) -> None: ...


#: admits(rule name, field getter of the process) -> whether the kernel may kill for it
Admits = Callable[[str, Callable[[str], Any]], bool]


def _admit_all(_rule: str, _get: Callable[[str], Any]) -> bool:
    return True


@dataclass
class ArmedRule:
    """A rule selected for in-kernel kill, with what its residue depends on."""

    name: str
    rule: Any
    fields: list[str]
    depth: int  # ancestors read; -1: the whole chain
    needs_container_detail: bool


@dataclass
class Arming:
    """The per-process kill map, kept in step with the process table."""

    rules: list[ArmedRule]
    maps: KillMaps
    agent_tgid: int = 0
    tables: KillTables = field(init=False)
    armed: dict[int, int] = field(default_factory=dict)  # tgid -> conj bitmap
    dependents: dict[int, set[int]] = field(default_factory=dict)
    deps_of: dict[int, list[int]] = field(default_factory=dict)
    applied_exec: dict[int, int] = field(default_factory=dict)
    applied_fork: dict[int, int] = field(default_factory=dict)
    # tgid -> time of the last applied record of its main thread (it carries the comm)
    applied_main: dict[int, int] = field(default_factory=dict)
    threaded: set[int] = field(default_factory=set)  # processes seen with other threads
    renamed_wait: set[int] = field(default_factory=set)  # renamed, not applied yet
    waiting_container: set[int] = field(default_factory=set)
    cgroups: dict[int, int] = field(default_factory=dict)  # tgid -> cgroup id at exec
    cache: dict[tuple[int, tuple[Any, ...]], tuple[pe.Conjunct, ...]] = field(
        default_factory=dict)
    refusals: int = 0
    templates: dict[tuple[int, frozenset[tuple[str, int]]], int] = field(default_factory=dict)
    parents: set[int] = field(default_factory=set)
    template_cache: dict[tuple[Any, ...], int] = field(default_factory=dict)
    reduced_cache: dict[tuple[str, ...], int] = field(default_factory=dict)
    ports_pushed: dict[int, int] = field(default_factory=dict)
    addrs_pushed: dict[tuple[int, bytes], int] = field(default_factory=dict)
    admits: Admits = _admit_all
    denied: set[int] = field(default_factory=set)  # a rule refused by admission
    _mask: tuple[bool, ...] = ()  # the rules admitted for the process being armed
    # changes long unconfirmed, already reported (pids), and when the last warnings went out
    reported: set[int] = field(default_factory=set)
    warn_times: list[int] = field(default_factory=list)
    # processes read from /proc because a change's record never came (pid -> when), those
    # whose dependents are still to be armed again, and how many such reads
    resynced: dict[int, int] = field(default_factory=dict)
    resync_rearm: set[int] = field(default_factory=set)
    resyncs: int = 0
    # processes armed (or spared) at least once: one whose exec and fork records were all
    # lost is armed at the first record of it that comes, so that its children get a
    # template (nothing else would ever arm it: no record of its own says it started)
    attempted: set[int] = field(default_factory=set)
    # processes that changed while their entries were being written (see _check_written)
    raced: set[int] = field(default_factory=set)
    _table: Any = None
    clock: Callable[[], int] = time.monotonic_ns  # bpf_ktime_get_ns() is CLOCK_MONOTONIC too
    trace: bool = field(default_factory=lambda: os.environ.get("ENFORCER_TRACE_ARMING") == "1")
    agent_ancestors: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.tables = KillTables([r.name for r in self.rules])
        depths = [r.depth for r in self.rules]
        self.depth = -1 if -1 in depths else max(depths, default=0)
        self.comms = sorted(set().union(*(pe.comm_literals(r.rule.expr) for r in self.rules)))
        # name prefixes the rules check (`proc.aname[1] startswith google_accounts`): the
        # kernel keeps a template's default off the comms that start with one, so that the
        # default decides those checks (without it, a grandchild through any unnamed comm,
        # `unshare -f cat`, `timeout 5 cat`, was never armed by the kernel)
        self.prefixes = frozenset().union(*(pe.comm_prefixes(r.rule.expr) for r in self.rules))
        self.maps.set_comm_prefixes(sorted(self.prefixes))
        self.child_keys = sorted({f for r in self.rules for f in r.fields
                                  if f not in pe.CHILD_OWN and f not in ("proc.aname[0]",)})

    # --- what the agent calls -----------------------------------------------------------
    def seed(self, ctx: Any, pids: Iterable[int]) -> None:
        """Arm every process found running at start."""
        mount = getattr(ctx.cgroup_ids, "mount", None)
        for pid in pids:
            proc = ctx.table.get(pid)
            if proc is not None and not proc.exited and proc.pid == pid:
                self.arm(ctx, proc, proc.uid, proc.gid,
                         cgroup_id(ctx.proc_root, pid, mount))

    def after(self, rec: dict[str, Any], ctx: Any) -> None:
        """Called after the tracker applied one record."""
        code = rec.get("_code")
        pid = rec["proc.pid"]
        ts = rec.get("_ts_mono", 0)
        if self.resynced:
            self._keep_resynced(ctx, pid, ts)
            if code == sc.EV_FORK:
                self._keep_resynced(ctx, rec["_child"], ts)
        if code != sc.EV_EXIT:
            self._comm_seen(ctx, pid, rec.get("thread.tid", pid), ts)
        if code == sc.EV_FORK:
            child = rec["_child"]
            self.applied_fork[child] = max(ts, self.applied_fork.get(child, -1))
            if pid in self.waiting_container or pid not in self.attempted:
                # a parent that waited for its container's metadata, or one never armed:
                # armed again (its template first) before its child is, which inherits the
                # wait, or no template at all, otherwise
                parent = ctx.table.get(pid)
                if parent is not None and parent.pid == pid:
                    self.arm(ctx, parent, parent.uid, parent.gid,
                             self.cgroups.get(pid, rec.get("_cgroup_id", 0)))
            proc = ctx.table.get(child)
            if proc is not None and proc.pid == child:
                self.arm(ctx, proc, rec["user.uid"], rec["group.gid"],
                         self.cgroups.get(pid, rec.get("_cgroup_id", 0)))
            self._rearm_dependents(ctx, child)
            return
        if code == sc.EV_EXIT:
            tid = rec["thread.tid"]
            if tid == pid:
                self.forget(pid)
            elif tid in self.armed:
                self.forget(tid)
            return
        etype = rec.get("evt.type")
        if etype in ("execve", "execveat"):
            # an exec leaves one thread (the kernel ends the others first, so their records
            # all came before this one): the table's comm is the main thread's again, as in
            # the kernel, where the exec's stamp replaces a poisoned one
            self.threaded.discard(pid)
            self.applied_exec[pid] = max(ts, self.applied_exec.get(pid, -1))
            proc = ctx.table.get(pid)
            if proc is not None:
                self.arm(ctx, proc, rec["user.uid"], rec["group.gid"],
                         rec.get("_cgroup_id", 0))
            self._rearm_dependents(ctx, pid)
        elif pid in self.waiting_container or pid not in self.attempted:
            proc = ctx.table.get(pid)
            if proc is not None and proc.pid == pid:
                self.arm(ctx, proc, rec["user.uid"], rec["group.gid"],
                         rec.get("_cgroup_id", 0))

    def _comm_seen(self, ctx: Any, pid: int, tid: int, ts: int) -> None:
        """The tracker took the process's comm from this record (every record but an
        exit's carries the comm of the thread that made it)."""
        if tid != pid:
            if pid not in self.threaded:
                # a comm the table took from another thread: a rename by the main thread
                # no longer proves what the table holds (see _applied)
                self.threaded.add(pid)
                self._rearm_dependents(ctx, pid)
            return
        if ts > self.applied_main.get(pid, -1):
            self.applied_main[pid] = ts
        if pid in self.renamed_wait:
            # the table has the name the process gave itself: arm it, and those that
            # read it, again
            self.renamed_wait.discard(pid)
            proc = ctx.table.get(pid)
            if proc is not None and proc.pid == pid and not proc.exited:
                self.arm(ctx, proc, proc.uid, proc.gid, self.cgroups.get(pid, 0))
            self._rearm_dependents(ctx, pid)

    def forget(self, pid: int) -> None:
        """The process is gone: its entry and its dependencies."""
        if self.armed.pop(pid, None) is not None:
            self.maps.delete(pid)
        if pid in self.parents:
            self.parents.discard(pid)
            self.maps.delete_parent(pid)
        for dep in self.deps_of.pop(pid, ()):
            users = self.dependents.get(dep)
            if users is not None:
                users.discard(pid)
                if not users:
                    del self.dependents[dep]
        self.waiting_container.discard(pid)
        self.attempted.discard(pid)
        self.denied.discard(pid)
        self.resynced.pop(pid, None)
        self.cgroups.pop(pid, None)
        self.applied_main.pop(pid, None)
        self.threaded.discard(pid)
        self.renamed_wait.discard(pid)

    # --- arming -------------------------------------------------------------------------
    def _rearm_dependents(self, ctx: Any, dep: int) -> None:
        for pid in list(self.dependents.get(dep, ())):
            if pid == dep:
                continue
            proc = ctx.table.get(pid)
            if proc is None:
                self.forget(pid)
                continue
            self.arm(ctx, proc, proc.uid, proc.gid, self.cgroups.get(pid, 0))

    def _conjuncts(self, index: int, event: LiveEvent) -> tuple[pe.Conjunct, ...] | None:
        rule = self.rules[index]
        key = (index, tuple(_hashable(event.get(f)) for f in rule.fields))
        found = self.cache.get(key)
        if found is not None:
            return found
        try:
            residue = pe.partial(rule.rule.expr, pe.process_decider(event))
            found = pe.conjuncts(residue, rule.rule.event_types)
        except pe.Ineligible as exc:
            log.debug("rule %s: process %s not armed: %s", rule.name, event.get("proc.pid"),
                      exc)
            return None
        except Exception:  # noqa: BLE001 - an evaluation error is never a reason to kill
            log.exception("rule %s: partial evaluation failed", rule.name)
            return None
        if len(self.cache) > 4096:
            self.cache.clear()
        self.cache[key] = found
        return found

    def arm(self, ctx: Any, proc: Any, uid: int, gid: int, cgroup: int) -> bool:
        """Compute and store the process's kill entry; False when it stays unarmed."""
        armed = self._arm(ctx, proc, uid, gid, cgroup)
        for _ in range(3):
            if proc.pid not in self.raced:
                break
            # it changed while its entries were written: what the kernel armed at that
            # change may be gone under them; armed again from /proc, as it is now
            self.raced.discard(proc.pid)
            stamp, ktime = self.maps.stamp(proc.pid)
            if not self._resync(proc.pid, stamp, ktime, at_once=True):
                break
            fresh = ctx.table.get(proc.pid)
            if fresh is None or fresh.pid != proc.pid:
                break
            proc = fresh
            armed = self._arm(ctx, proc, proc.uid, proc.gid, self.cgroups.get(proc.pid, cgroup))
        self.raced.discard(proc.pid)
        if len(self.attempted) >= 65536:  # exit records lost too: keep those still known
            self.attempted = set(self.deps_of)
        self.attempted.add(proc.pid)
        if self.trace and getattr(getattr(proc, "cgroup", None), "full_id", ""):
            # diagnostics for the container tests (ENFORCER_TRACE_ARMING=1): every decision
            # on a container's process, with what it was made from
            info = ctx.containers.get(proc.cgroup.full_id) if hasattr(ctx, "containers") \
                else None
            sys.stderr.write(
                f"enforcer: arming: pid={proc.pid} vpid={proc.vpid} comm={proc.comm!r} "
                f"armed={armed} template={proc.pid in self.parents} "
                f"admitted={proc.pid not in self.denied} "
                f"waiting={proc.pid in self.waiting_container} "
                f"renamed_wait={proc.pid in self.renamed_wait} "
                f"name={getattr(info, 'name', None)!r} "
                f"ns={getattr(info, 'k8s_ns_name', None)!r} "
                f"deps={self.deps_of.get(proc.pid)} refusals={self.refusals}\n")
        return armed

    def _arm(self, ctx: Any, proc: Any, uid: int, gid: int, cgroup: int) -> bool:
        pid = proc.pid
        self._table = ctx.table
        if self._spared(ctx, proc):
            self.forget(pid)
            return False
        self.cgroups[pid] = cgroup
        rec = {"proc.pid": pid, "thread.tid": pid, "user.uid": uid, "group.gid": gid,
               "_comm": proc.comm, "_cgroup_id": cgroup, "_ts_mono": 0}
        event = LiveEvent(rec, ctx, proc)
        # read once, before admission: metadata stored by the lookup thread while this runs
        # left a container's PID 1 refused (no name yet) and no longer waiting (a name by
        # then), so its children were never armed (CI, the k8s-labelled container tests)
        container = event.container()
        in_container = bool(container.full_id)
        missing = in_container and container.name is None
        allowed = [self._admitted(rule.name, event) for rule in self.rules]
        if all(allowed):
            self.denied.discard(pid)
        else:
            self.denied.add(pid)
        chain = self._chain(ctx, proc, self.depth, MAX_DEPS)
        parent_chain = self._chain(ctx, proc, self.depth - 1 if self.depth > 0 else self.depth,
                                   MAX_DEPS - 1)
        self._depend(pid, sorted(set(chain or ()) | set(parent_chain or ())))
        # its children are of its workload: their template leaves the refused rules out
        self._mask = tuple(allowed)
        self._template(ctx, proc, event, uid, gid, cgroup, parent_chain)
        if chain is None:
            self._disarm(pid)
            return False
        self.waiting_container.discard(pid)
        if container_init(proc):
            # a container's PID 1 is never killed, but its children are ordinary processes
            # of the workload: only the template above arms them (from the kernel, at their
            # fork and exec, before userspace hears of them). Whatever the kernel holds for
            # it goes too (its own cgroup differs from its parent's, so no template of the
            # runtime's arms it; this makes sure)
            self.armed.pop(pid, None)
            self.maps.delete(pid)
            if missing:
                self.waiting_container.add(pid)
            return False
        bitmap = 0
        for index, rule in enumerate(self.rules):
            if rule.needs_container_detail and missing:
                self.waiting_container.add(pid)  # metadata not there yet: try again later
                self._disarm(pid)
                return False
            if not allowed[index]:
                continue
            conj = self._conjuncts(index, event)
            if conj is None:
                continue
            for c in conj:
                try:
                    slot, new = self.tables.slot(index, c)
                except TableFull as exc:
                    log.warning("in-kernel kill: %s; pid %s is left to userspace", exc, pid)
                    self._disarm(pid)
                    return False
                if new:
                    self._publish(slot)
                bitmap |= 1 << slot
        if missing:
            # the namespace guard is checked again once the metadata is there
            self.waiting_container.add(pid)
        if not bitmap:
            self._disarm(pid)
            return False
        deps = self._stamps(chain)
        if deps is None:
            # the kernel has seen a change the table has not applied yet: what the kernel
            # holds for the process is either its own arming at that change (current) or
            # an older entry it no longer trusts (stale stamps), so it is left in place
            self.armed.pop(pid, None)
            return False
        self.maps.put(pid, bitmap, uid, gid, cgroup, proc.comm.encode()[:15], deps)
        self.armed[pid] = bitmap
        self._check_written(pid, deps)
        return True

    def _check_written(self, pid: int, deps: list[tuple[int, int]]) -> None:
        """After writing the process's entry or template, computed from `deps` (its own
        stamp first): if the process changed since its stamp was read (an exec between the
        read and the write), the kernel armed it at that change from its parent's template
        and the write may have replaced that with one the kernel no longer trusts, leaving
        it unarmed until the change's record comes (a `cat` then read the file before the
        userspace kill). arm() reads it from /proc and arms it again."""
        if deps and deps[0][0] == pid and self.maps.stamp(pid)[0] != deps[0][1]:
            self.raced.add(pid)

    def _stamps(self, chain: list[int]) -> list[tuple[int, int]] | None:
        """(pid, stamp) of each dependency, or None while the table is behind one."""
        deps = []
        for dep in chain:
            stamp, ktime = self.maps.stamp(dep)
            if stamp and not self._applied(dep, stamp, ktime):
                self.refusals += 1
                if not self._resync(dep, stamp, ktime):
                    self._unconfirmed(dep, stamp, ktime)
                if stamp & STAMP_RENAMED and dep not in self.threaded:
                    self.renamed_wait.add(dep)
                return None
            deps.append((dep, stamp))
        return deps

    def _resync(self, dep: int, stamp: int, ktime: int, at_once: bool = False) -> bool:
        """A change the kernel stamped more than RESYNC_AFTER_NS ago whose record the table
        never applied (lost to a full ring, which any workload can cause): read the process
        from /proc instead. Sound because the stamp was read before /proc and is read again
        after: unchanged, /proc shows the process as it has been since that change. The
        processes that depend on it are armed again on the next poll (their residues were
        computed from the old entry). A record of the process older than the read that
        arrives later does not set the table back (see _keep_resynced). A rename by another
        thread is never trusted, as before. `at_once`: a change that raced a write of
        the process's own entries (see _check_written), not worth waiting for."""
        table = self._table
        now = self.clock()
        if (table is None or not stamp or stamp & STAMP_POISON
                or (not at_once and now - ktime < RESYNC_AFTER_NS)):
            return False
        fresh = table.read_proc(dep)
        if fresh is None or self.maps.stamp(dep)[0] != stamp:
            return False
        table.replace(fresh)
        self.applied_exec[dep] = self.applied_main[dep] = self.applied_fork[dep] = now
        self.threaded.discard(dep)
        self.renamed_wait.discard(dep)
        if len(self.resynced) >= 4096:
            self.resynced.clear()
        self.resynced[dep] = now
        self.resync_rearm.add(dep)
        self.resyncs += 1
        return True

    def _keep_resynced(self, ctx: Any, pid: int, ts: int) -> None:
        """The tracker just applied a record of `pid` made before the table was read from
        /proc for it: put /proc's view back (the record may have set the table back)."""
        at = self.resynced.get(pid)
        if at is None or ts >= at:
            return
        fresh = ctx.table.read_proc(pid)
        if fresh is not None:
            ctx.table.replace(fresh)

    def rearm_resynced(self, ctx: Any) -> None:
        """Arm again the processes read from /proc, and those that depend on them."""
        pids, self.resync_rearm = sorted(self.resync_rearm), set()
        for pid in pids:
            proc = ctx.table.get(pid)
            if proc is not None and proc.pid == pid and not proc.exited:
                self.arm(ctx, proc, proc.uid, proc.gid, self.cgroups.get(pid, 0))
            self._rearm_dependents(ctx, pid)

    def _unconfirmed(self, dep: int, stamp: int, ktime: int) -> None:
        """Say so (a few times a minute at most) when a change the kernel saw long ago is
        still not in the table: its records were lost (a full ring) or never trusted (a
        rename by another thread). The processes that read it stay unarmed; only the
        userspace kill answers them."""
        now = self.clock()
        if now - ktime < UNCONFIRMED_AFTER_NS or dep in self.reported:
            return
        if len(self.reported) >= 4096:
            self.reported.clear()
        self.reported.add(dep)
        self.warn_times = [t for t in self.warn_times if now - t < 60_000_000_000]
        if len(self.warn_times) >= 10:
            return
        self.warn_times.append(now)
        kind = ("a rename by another thread" if stamp & STAMP_POISON
                else "a rename" if stamp & STAMP_RENAMED
                else "its fork" if stamp & STAMP_FORK else "an exec")
        log.warning("in-kernel kill: %s of pid %d %.1f s ago is still not in the process "
                    "table (records lost, or a process with other threads); what depends on "
                    "it is left to the userspace kill", kind, dep, (now - ktime) / 1e9)

    def _template(self, ctx: Any, proc: Any, event: LiveEvent, uid: int, gid: int,
                  cgroup: int, chain: list[int] | None) -> None:
        """What the kernel arms a child of this process with, by the child's comm."""
        pid = proc.pid
        known = _child_view(event, proc)
        tmpl = None
        if chain is not None:
            key = tuple(_hashable(known(k)) for k in self.child_keys) + (self._mask,)
            tmpl = self.template_cache.get(key)
            if tmpl is None:
                tmpl = self._build_template(known)
                if tmpl is None:
                    return self._drop_parent(pid)
                if len(self.template_cache) > 4096:
                    self.template_cache.clear()
                self.template_cache[key] = tmpl
        deps = self._stamps(chain) if chain is not None else None
        if chain is not None and tmpl is not None and tmpl >= 0 and deps is None:
            self.parents.discard(pid)  # the kernel's own template is newer (see arm())
            return None
        if tmpl is None or tmpl < 0 or deps is None:
            return self._drop_parent(pid)
        self.maps.put_parent(pid, tmpl, uid, gid, cgroup, deps)
        self.parents.add(pid)
        self._check_written(pid, deps)
        return None

    def _drop_parent(self, pid: int) -> None:
        if pid in self.parents:
            self.parents.discard(pid)
            self.maps.delete_parent(pid)

    def _build_template(self, known: Callable[[str], tuple[bool, Any]],
                        parent: Any = pe.KNOWN) -> int | None:
        """The template id for the children of a process with these known fields (-1:
        never arms). With `parent` a comm (or None: any other), the template of the
        grandchildren through a child with that comm, whose own fields are unknown."""
        try:
            # what the parent decides first, once; then each comm on what is left
            reduced = [pe.partial(r.rule.expr, pe.child_decider(known, pe.SOME_COMM, parent,
                                                                 self.prefixes))
                       for r in self.rules]
            key_text = tuple(str(r) for r in reduced) + tuple(str(m) for m in self._mask)
            if parent is pe.KNOWN:
                key_text += ("children",)
            if key_text in self.reduced_cache:
                return self.reduced_cache[key_text]
            default = self._child_bits(reduced, known, None, parent)
            comms = {}
            # a comm no longer named by what is left behaves as any other comm (the
            # kernel's default is only for comms without spaces)
            named = set().union(*(pe.comm_literals(r) for r in reduced
                                  if not isinstance(r, bool)))
            # a comm that starts with a prefix never takes the default (the kernel checks)
            for comm in sorted(named | {c for c in self.comms if " " in c} | self.prefixes):
                bits = self._child_bits(reduced, known, comm, parent)
                if bits != default or comm in self.prefixes:
                    comms[comm] = bits
            child_default, child_comms = -1, {}
            if parent is pe.KNOWN:  # one level further: the child's own children
                grand = _shifted(known)
                child_default = self._build_template(grand, None)
                if child_default is None:
                    child_default = -1
                for comm in self.comms:
                    tid = self._build_template(grand, comm)
                    tid = -1 if tid is None else tid
                    if tid != child_default or comm in self.prefixes:
                        child_comms[comm] = tid
        except TableFull as exc:
            log.warning("in-kernel kill: %s", exc)
            return None
        if not default and not comms and child_default < 0 and not child_comms:
            found = -1
        else:
            key = (default, frozenset(comms.items()), child_default,
                   frozenset(child_comms.items()))
            found = self.templates.get(key)
            if found is None:
                found = len(self.templates)
                if found >= MAX_TEMPLATES:
                    return None
                self.maps.set_template(found, default, comms, child_default, child_comms)
                self.templates[key] = found
        self.reduced_cache[key_text] = found
        return found

    def _child_bits(self, reduced: list[pe.Residue], known: Callable[[str], tuple[bool, Any]],
                    comm: str | None, parent: Any) -> int:
        bits = 0
        for index, rule in enumerate(self.rules):
            expr = reduced[index]
            if expr is False or (self._mask and not self._mask[index]):
                continue
            try:
                residue = (expr if expr is True
                           else pe.partial(expr, pe.child_decider(known, comm, parent,
                                                                  self.prefixes)))
                conj = pe.conjuncts(residue, rule.rule.event_types)
            except pe.Ineligible:
                continue
            for c in conj:
                slot, new = self.tables.slot(index, c)
                if new:
                    self._publish(slot)
                bits |= 1 << slot
        return bits

    def _admitted(self, rule: str, event: LiveEvent) -> bool:
        try:
            return bool(self.admits(rule, event.get))
        except Exception:  # noqa: BLE001 - when in doubt, the kernel does not kill
            log.exception("in-kernel kill: admission of %s failed", rule)
            return False

    def rearm_waiting(self, ctx: Any) -> None:
        """Container metadata arrived: arm again the processes that waited for theirs
        (a container's PID 1 may make no record of its own for a long time)."""
        for pid in sorted(self.waiting_container):
            proc = ctx.table.get(pid)
            if proc is None or proc.exited or proc.pid != pid:
                self.forget(pid)
                continue
            self.arm(ctx, proc, proc.uid, proc.gid, self.cgroups.get(pid, 0))

    def rearm_all(self, ctx: Any) -> None:
        """Admission may have changed (a policy suspended, resumed, half-open): arm again
        every process that is armed or was refused by it."""
        for pid in sorted(set(self.armed) | self.denied | self.parents):
            proc = ctx.table.get(pid)
            if proc is None or proc.exited or proc.pid != pid:
                self.forget(pid)
                continue
            self.arm(ctx, proc, proc.uid, proc.gid, self.cgroups.get(pid, 0))

    def _spared(self, ctx: Any, proc: Any) -> bool:
        """The guards no policy switches off: never PID 1, the agent, its ancestors or its
        descendants (neither armed nor a template for its children). A container's PID 1
        is not armed either, but its children are (see arm())."""
        if proc.pid <= 1 or proc.pid == self.agent_tgid:
            return True
        if proc.pid in self.agent_ancestors:
            return True
        return any(a.pid == self.agent_tgid for a in ctx.table.ancestors(proc))

    def _disarm(self, pid: int) -> None:
        if self.armed.pop(pid, None) is not None:
            self.maps.delete(pid)

    def _applied(self, dep: int, stamp: int, ktime: int) -> bool:
        if stamp & STAMP_POISON:
            return False
        if stamp & STAMP_RENAMED:
            # the table holds the new name once it applied a later record of the main
            # thread, unless another thread's records may have replaced it since
            return dep not in self.threaded and self.applied_main.get(dep, -1) >= ktime
        if stamp & STAMP_FORK:
            return self.applied_fork.get(dep, -1) >= ktime - FORK_TOLERANCE_NS
        return self.applied_exec.get(dep, -1) >= ktime

    def _chain(self, ctx: Any, proc: Any, need: int, room: int) -> list[int] | None:
        """The pids whose state a residue reads: the process and `need` ancestors (-1:
        all), and the missing parent that ends a shorter chain (a new process with that
        pid would extend it). None when more than `room`."""
        chain = [proc.pid]
        cur = proc
        count = 0
        for anc in ctx.table.ancestors(proc):
            if 0 <= need <= count:
                return chain
            chain.append(anc.pid)
            cur = anc
            count += 1
            if len(chain) > room:
                return None
        if cur.ppid > 0 and cur.ppid not in chain:
            chain.append(cur.ppid)
        return chain if len(chain) <= room else None

    def _depend(self, pid: int, chain: list[int]) -> None:
        for dep in self.deps_of.pop(pid, ()):
            users = self.dependents.get(dep)
            if users is not None:
                users.discard(pid)
        self.deps_of[pid] = chain
        for dep in chain:
            self.dependents.setdefault(dep, set()).add(pid)

    def _publish(self, slot: int) -> None:
        """A new conjunct: its path, port and address entries first, then the row (never a
        half-built one)."""
        for key, (always, noslash) in self.tables.lpm_entries().items():
            self.maps.set_path(key, always, noslash)
        ports = {port: bits for port, bits in self.tables.port_bits().items()
                 if self.ports_pushed.get(port) != bits}
        if ports:
            self.maps.set_ports(ports)
            self.ports_pushed.update(ports)
        for (plen, key), bits in self.tables.addr_entries().items():
            if self.addrs_pushed.get((plen, key)) != bits:
                self.maps.set_addr(plen, key, bits)
                self.addrs_pushed[(plen, key)] = bits
        row = self.tables.rows[slot]
        self.maps.set_conj(slot, row.classes, row.paths_all, row.paths_none, row.types,
                           row.results, row.uses_path, row.rule, row.ports_all,
                           row.ports_none, row.addrs_all, row.addrs_none, row.uses_net)


_CHAINS = {"proc.aname": "proc.name", "proc.aexe": "proc.exe", "proc.aexepath": "proc.exepath",
           "proc.acmdline": "proc.cmdline", "proc.apid": "proc.pid"}
_PARENT = {"proc.pname": "proc.name", "proc.pcmdline": "proc.cmdline", "proc.pexe": "proc.exe",
           "proc.pexepath": "proc.exepath", "proc.ppid": "proc.pid"}


def _child_view(parent: LiveEvent, proc: Any) -> Callable[[str], tuple[bool, Any]]:
    """The fields of a future child of `proc` that are known now (its ancestors are
    `proc` and proc's ancestors; its user and container are proc's)."""
    def known(key: str) -> tuple[bool, Any]:
        if key in pe.CHILD_OWN:
            return False, None
        if key in _PARENT:
            return True, parent.get(_PARENT[key])
        base, _, arg = key.partition("[")
        if base in _CHAINS:
            if not arg:
                return True, [parent.get(_CHAINS[base])] + list(parent.get(base) or [])
            n = arg.rstrip("]")
            if not n.isdigit() or n == "0":
                return False, None
            k = int(n)
            return True, parent.get(_CHAINS[base] if k == 1 else f"{base}[{k - 1}]")
        if key.startswith(("user.", "group.", "container.", "k8s.")):
            return True, parent.get(key)
        return False, None
    return known


def container_init(proc: Any) -> bool:
    """PID 1 of a container, as the kill's guard (enforcer.policy.guards.container_init)
    sees it: PID 1 of a pid namespace right below /proc's own, in a container (its cgroup
    names one). PID 1 of a namespace nested deeper is one the workload made itself
    (`unshare -Urpf cat /etc/shadow` in a container), and PID 1 of a namespace a host user
    made (the same command on the host) is no container's: both are armed like any other
    process. A depth not known yet counts as right below."""
    return (proc.vpid == 1 and getattr(proc, "pid_ns_depth", 0) <= 2
            and bool(getattr(getattr(proc, "cgroup", None), "full_id", "")))


def cgroup_id(proc_root: str, pid: int, mount: str | None) -> int:
    """The cgroup v2 id of a running process (the inode of its cgroup directory, as
    bpf_get_current_cgroup_id() says); 0 when unknown (the kernel then skips that check)."""
    if not mount:
        return 0
    try:
        with open(f"{proc_root}/{pid}/cgroup") as fh:
            for line in fh:
                if line.startswith("0::"):
                    return os.stat(mount + line[3:].strip()).st_ino
    except OSError:
        pass
    return 0


def _shifted(known: Callable[[str], tuple[bool, Any]]) -> Callable[[str], tuple[bool, Any]]:
    """The known fields of a grandchild, from those of a child (one generation further)."""
    def grand(key: str) -> tuple[bool, Any]:
        if key in pe.CHILD_OWN or key in _PARENT:
            return False, None
        base, _, arg = key.partition("[")
        if base in _CHAINS:
            n = arg.rstrip("]")
            if not n.isdigit() or int(n) < 2:
                return False, None
            return known(f"{base}[{int(n) - 1}]")
        return known(key)
    return grand


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def armed_rules(rules: Iterable[Any]) -> list[ArmedRule]:
    """The ArmedRule of each rule (all must be eligible: see rule_eligibility)."""
    out = []
    for rule in rules:
        fields = pe.process_fields(rule.expr)
        detail = any(f.startswith(_CONTAINER_DETAIL) or f.startswith("k8s.")
                     or f.startswith("container.image") for f in fields)
        out.append(ArmedRule(rule.name, rule, fields, pe.ancestor_depth(rule.expr), detail))
    return out


_CLK_TCK = os.sysconf("SC_CLK_TCK")

OnKill = Callable[[Any, str], None]


class KernelKiller:
    """The in-kernel kill as the agent sees it: load, arm, poll the kill records, close.

    `on_kill(record, rule_name)` is called (from the agent's loop) for every kill the
    kernel made."""

    def __init__(self, rules: Iterable[Any], agent_tgid: int,
                 on_kill: OnKill | None = None, admits: Admits | None = None,
                 generation: Callable[[], int] | None = None):
        self.admits = admits or _admit_all
        # when it changes, admission may answer otherwise: every process is armed again
        self.generation = generation or (lambda: 0)
        self._seen_generation = 0
        # the admission generation whose arming is complete (`enforcer policies status`
        # says whether the kernel has caught up with the breakers' states)
        self.applied_generation: int | None = None
        self._seen_described = 0  # container descriptions stored (ContainerRegistry)
        self._ctx: Any = None
        self.rules_selected = list(rules)
        self.rules = armed_rules(self.rules_selected)
        self.agent_tgid = agent_tgid
        self.on_kill = on_kill
        self.arming: Arming | None = None
        self.kills: list[Any] = []
        self.last_stats = (0, 0, 0)
        self._maps: Any = None

    def open(self, ctx: Any) -> None:
        """Load bpf/enforce.c and arm every running process (ProbeError on failure)."""
        from enforcer.adapters.bcc_enforce import BccEnforce  # noqa: PLC0415
        from enforcer.kernel.kill_tables import render  # noqa: PLC0415

        types = set().union(*(r.rule.event_types or () for r in self.rules))
        self._maps = BccEnforce(render(self.agent_tgid, types=types), self._record)
        self.arming = Arming(self.rules, self._maps, self.agent_tgid, admits=self.admits,
                             agent_ancestors=set(proc_ancestors(self.agent_tgid)))
        self._ctx = ctx
        self._seen_generation = self.generation()
        pids = [int(d) for d in os.listdir(ctx.proc_root) if d.isdigit()]
        self.arming.seed(ctx, pids)
        self.applied_generation = self._seen_generation

    def after(self, rec: dict[str, Any], ctx: Any) -> None:
        if self.arming is not None:
            try:
                self.arming.after(rec, ctx)
            except Exception:  # noqa: BLE001 - arming must never stop detection
                log.exception("in-kernel kill: arming failed")

    def poll(self) -> None:
        if self._maps is not None:
            self._maps.poll(0)
        if self.arming is not None and self._ctx is not None:
            if self.arming.resync_rearm:
                try:
                    self.arming.rearm_resynced(self._ctx)
                except Exception:  # noqa: BLE001 - arming must never stop detection
                    log.exception("in-kernel kill: re-arming failed")
            described = getattr(getattr(self._ctx, "containers", None), "described", 0)
            if described != self._seen_described and self.arming.waiting_container:
                self._seen_described = described
                try:
                    self.arming.rearm_waiting(self._ctx)
                except Exception:  # noqa: BLE001 - arming must never stop detection
                    log.exception("in-kernel kill: re-arming failed")
            generation = self.generation()
            if generation != self._seen_generation:
                self._seen_generation = generation
                try:
                    self.arming.rearm_all(self._ctx)
                except Exception:  # noqa: BLE001 - arming must never stop detection
                    log.exception("in-kernel kill: re-arming failed")
                self.applied_generation = generation

    def _record(self, rec: Any) -> None:
        name = (self.rules[rec.rule].name if 0 <= rec.rule < len(self.rules)
                else f"rule #{rec.rule}")
        self.kills.append((rec, name))
        if self.on_kill is not None:
            try:
                self.on_kill(rec, name)
            except Exception:  # noqa: BLE001
                log.exception("in-kernel kill: on_kill hook failed")

    def killed(self, pid: int, start_ticks: int | None) -> bool:
        """Whether the kernel killed this process (pid, and its start in clock ticks since
        boot as /proc says, when known). Safe from any thread: one map lookup."""
        maps = self._maps
        if maps is None:
            return False
        start_ns = maps.killed_start(pid)
        if start_ns is None:
            return False
        return start_ticks is None or start_ns // (1_000_000_000 // _CLK_TCK) == start_ticks

    def stats(self) -> tuple[int, int, int]:
        """(kills, refusals because something changed since exec, lost kill records)."""
        return self._maps.stats() if self._maps is not None else (0, 0, 0)

    def switch_off(self) -> None:
        """The kernel stops killing now (a reload changed what it kills for)."""
        if self._maps is not None:
            self._maps.switch_off()

    def close(self) -> None:
        maps, self._maps = self._maps, None  # a second close finds nothing to close again
        if maps is not None:
            maps.poll(0)
            self.last_stats = maps.stats()
            maps.close()
