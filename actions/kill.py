"""kill — signal the matched process (default SIGKILL), its process group, or every process
of its container.

RBAC: none (node-local; the agent needs CAP_KILL and hostPID).

The target is the event's process identified by pid *and* start time; the signal goes
through a pidfd opened when the match was decided, so a pid reused since the event is never
hit. PID 1 of a container is spared unless `scope: container` asks for the whole container
(`scope: process_group` signals the group without it). A process in a protected namespace,
or in a pod whose namespace is not known yet, is never signalled.
With `in_kernel: true` the BPF program itself sends SIGKILL at syscall entry for the rule
(validated by `enforcer validate`); the userspace kill still runs as a backstop.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from actions.base import (
    DONE,
    DONE_IN_KERNEL,
    DRY_RUN,
    NOOP,
    Action,
    AlreadyDone,
    Outcome,
    Params,
    Plan,
    Refused,
    param,
)
from actions.context import ActionContext, MissingFields
from actions.process import IdentityMismatch, ProcessGone, ProcessHandle, expected_start, read_stat

SCOPES = ("process", "process_group", "container")


def _signal(value: Any) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError(f"expected a signal name such as KILL or TERM, got {value!r}")
    try:
        if isinstance(value, int):
            return signal.Signals(value).name
        name = value.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        return signal.Signals[name].name
    except (KeyError, ValueError):
        raise ValueError(f"unknown signal {value!r}; use a name such as KILL, TERM, STOP"
                         ) from None


def _scope(value: Any) -> str:
    if value not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {value!r}")
    return value


@dataclass(frozen=True)
class KillParams(Params):
    signal: str = param("SIGKILL", parse=_signal,
                        schema={"type": ["string", "integer"]},
                        doc="signal name (KILL, TERM, …) or number")
    scope: str = param("process", parse=_scope, schema={"enum": list(SCOPES)},
                       doc="process, process_group, or container (every process of its "
                           "pid namespace, including its PID 1)")
    in_kernel: bool = param(False, doc="also kill at syscall entry from the BPF program")
    require_start_time: bool = param(
        True, doc="skip the kill when the event lacks the process start time")

    def __post_init__(self) -> None:
        if self.in_kernel and (self.signal != "SIGKILL" or self.scope != "process"):
            error = ValueError("in_kernel: only signal KILL with scope process can be sent "
                               "from the kernel")
            error.key = "in_kernel"  # type: ignore[attr-defined]
            raise error


class Kill(Action):
    name = "kill"
    params_type = KillParams
    required_fields = ("proc.pid",)
    target_fields = ("proc.pid", "proc.start_ticks", "proc.pid.ts")
    destructive = True
    example = "- kill: {signal: KILL}"
    params: KillParams

    def plan(self, context: ActionContext) -> Plan:
        # protected namespaces hold for the kill too (and a pod of unknown namespace)
        namespace = context.field("k8s.ns.name")
        context.guards.check_target(str(namespace) if namespace is not None else None,
                                    context.field("k8s.pod.name")
                                    or context.field("k8s.pod.uid"))
        pid = int(context.field("proc.pid"))
        expected = expected_start(context.event)
        if expected is None and self.params.require_start_time:
            raise MissingFields(["proc.start_ticks or proc.pid.ts (process start time)"])
        handle = context.process
        opened_here = False
        kernel_kills = (getattr(context.services, "kernel_kills", None)
                        if self.params.in_kernel else None)
        gone_start = expected[1] if expected is not None and expected[0] == "ticks" else None
        if isinstance(handle, ProcessGone) and self.params.in_kernel:
            return _in_kernel_plan(pid, _asker(kernel_kills, pid, gone_start))
        if isinstance(handle, Exception):
            _raise_for(handle)
        if handle is None or handle.pid != pid:
            try:
                handle = ProcessHandle.open(pid, expected)
            except ProcessGone as exc:
                if self.params.in_kernel:  # killed at the syscall, or exited: apply() says
                    return _in_kernel_plan(pid, _asker(kernel_kills, pid, gone_start))
                _raise_for(exc)
            except IdentityMismatch as exc:
                _raise_for(exc)
            opened_here = True
        handles = [handle]
        try:
            allow_init = self.params.scope == "container"
            context.guards.check_process(handle.pid, allow_container_init=allow_init)
            if self.params.scope == "process_group":
                handles += _group_members(handle, context.guards)
            elif self.params.scope == "container":
                handles += _container_members(handle, context.guards)
        except BaseException:
            for extra in handles[1:]:
                extra.close()
            if opened_here:
                handle.close()
            raise
        targets = [h.identity() for h in handles]
        summary = (f"send {self.params.signal} to pid {pid} ({handle.comm})" if len(handles) == 1
                   else f"send {self.params.signal} to {len(handles)} processes "
                        f"({self.params.scope} of pid {pid})")
        if self.params.in_kernel:
            summary += " (in the kernel, at the matching syscall)"
        return Plan(action=self.name, target={"pid": pid, "start_ticks": handle.start_ticks,
                                              "comm": handle.comm, "scope": self.params.scope},
                    render={"syscall": "pidfd_send_signal", "signal": self.params.signal,
                            "processes": targets},
                    summary=summary,
                    private={"handles": handles,
                             "owned": handles if opened_here else handles[1:],
                             "killed_in_kernel": _asker(kernel_kills, handle.pid,
                                                        handle.start_ticks)})

    def apply(self, plan: Plan, dry_run: bool) -> Outcome:
        handles: list[ProcessHandle] = plan.private["handles"]
        signum = signal.Signals[self.params.signal]
        # in-kernel kill: immediate, at the syscall; the userspace kill is the backstop. Only
        # the kernel's own record of whom it killed makes this the kernel's kill: a process
        # that was not armed and exited on its own is not one (the kernel writes the record
        # before it signals, so a SIGKILL it sent is never seen before its record)
        killed_in_kernel = plan.private.get("killed_in_kernel")
        if self.params.in_kernel and not dry_run and killed_in_kernel is not None \
                and killed_in_kernel():
            return _killed_in_kernel(plan)
        alive = [h for h in handles if h.alive()]
        if self.params.in_kernel:
            # exiting or a zombie (a zombie still takes signal 0): nothing left to kill
            alive = [h for h in alive if not h.dying()]
        if not alive and self.params.in_kernel and dry_run:
            return Outcome(DRY_RUN, f"would have sent SIGKILL to pid {plan.target['pid']} "
                                    "in the kernel, at the matching syscall")
        if not alive and self.params.in_kernel:
            # the kernel may have killed it since the first look (the task was preempted
            # between the program that reported the open and the one that kills)
            if killed_in_kernel is not None and killed_in_kernel():
                return _killed_in_kernel(plan)
            return Outcome(NOOP, "the process had already exited; the kernel did not kill it "
                                 "(not armed for it, or what it was armed from had changed)")
        if not alive:
            return Outcome(NOOP, "the process had already exited")
        if dry_run:
            return Outcome(DRY_RUN, "would " + plan.summary,
                           {"would_signal": [h.identity() for h in alive]})
        sent = [h.identity() for h in alive if h.send(signum)]
        sent_ns = time.time_ns()
        if not sent:
            return Outcome(NOOP, "the process exited before the signal")
        return Outcome(DONE, f"sent {self.params.signal} to "
                             + ", ".join(f"pid {s['pid']}" for s in sent),
                       {"signalled": sent, "signalled_ns": sent_ns})

    def release(self, plan: Plan) -> None:
        for handle in plan.private.get("owned", ()):
            handle.close()


def _killed_in_kernel(plan: Plan) -> Outcome:
    return Outcome(DONE_IN_KERNEL, f"SIGKILL sent to pid {plan.target['pid']} by the kernel, "
                                   "at the matching syscall")


def _asker(kernel_kills: Any, pid: int, start_ticks: int | None) -> Any:
    """A question for apply(): did the kernel kill this process? None: no in-kernel kill
    is loaded to ask."""
    if kernel_kills is None:
        return None
    return lambda: bool(kernel_kills(pid, start_ticks))


def _in_kernel_plan(pid: int, killed_in_kernel: Any) -> Plan:
    """The plan of an in-kernel kill whose process is already gone (killed at the
    syscall, or exited): apply() reports which, nothing is signalled from userspace."""
    return Plan(action="kill", target={"pid": pid, "scope": "process"},
                render={"in_kernel": True, "signal": "SIGKILL", "processes": []},
                summary=f"send SIGKILL to pid {pid} (in the kernel, at the matching syscall)",
                private={"handles": [], "owned": [], "killed_in_kernel": killed_in_kernel})


def _raise_for(exc: Exception) -> None:
    if isinstance(exc, ProcessGone):
        raise AlreadyDone(str(exc))
    if isinstance(exc, IdentityMismatch):
        raise Refused("identity", str(exc))
    raise exc


def _members(predicate: Any) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and predicate(int(entry)):
            pids.append(int(entry))
    return pids


def _open_checked(pids: list[int], leader: ProcessHandle, guards: Any,
                  allow_init: bool, skip_init: bool = False) -> list[ProcessHandle]:
    """Open and guard-check each member. `skip_init`: a container's PID 1 in the group is
    left out (spared) instead of refusing the whole kill."""
    opened: list[ProcessHandle] = []
    try:
        for pid in pids:
            if pid == leader.pid:
                continue
            stat = read_stat(pid)
            if stat is None:
                continue
            try:
                handle = ProcessHandle.open(pid, ("ticks", stat.start_ticks))
            except (ProcessGone, IdentityMismatch):
                continue
            opened.append(handle)
            try:
                guards.check_process(pid, allow_container_init=allow_init)
            except Refused as exc:
                if not (skip_init and exc.guard == "container-init"):
                    raise
                opened.pop().close()
    except BaseException:
        for handle in opened:
            handle.close()
        raise
    return opened


def _group_members(leader: ProcessHandle, guards: Any) -> list[ProcessHandle]:
    def same_group(pid: int) -> bool:
        stat = read_stat(pid)
        return stat is not None and stat.pgrp == leader.pgrp
    return _open_checked(_members(same_group), leader, guards, allow_init=False,
                         skip_init=True)


def _container_members(leader: ProcessHandle, guards: Any) -> list[ProcessHandle]:
    target_ns = _pid_ns(leader.pid)
    if target_ns is None or target_ns == _pid_ns(os.getpid()):
        raise Refused("host-namespace", f"pid {leader.pid} is not in a container's pid "
                                        "namespace; scope container would reach host processes")
    return _open_checked(_members(lambda pid: _pid_ns(pid) == target_ns), leader, guards,
                         allow_init=True)


def _pid_ns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


ACTION = Kill
