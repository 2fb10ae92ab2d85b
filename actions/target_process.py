"""The process an action targets, pinned by pid and start time (never a reused pid)."""

from __future__ import annotations

from actions.base import AlreadyDone, Refused
from actions.context import ActionContext
from actions.process import IdentityMismatch, ProcessGone, ProcessHandle, expected_start


def pinned_process(context: ActionContext, pid: int) -> tuple[ProcessHandle, bool]:
    """The handle the responder opened when the match was decided, or one opened now.

    Returns (handle, owned): the caller closes an owned handle. A process already gone is
    AlreadyDone (a noop); one whose start time differs from the event's is Refused."""
    handle = context.process
    if isinstance(handle, ProcessGone):
        raise AlreadyDone(str(handle))
    if isinstance(handle, IdentityMismatch):
        raise Refused("identity", str(handle))
    if isinstance(handle, ProcessHandle) and handle.pid == pid:
        return handle, False
    try:
        return ProcessHandle.open(pid, expected_start(context.event)), True
    except ProcessGone as exc:
        raise AlreadyDone(str(exc)) from None
    except IdentityMismatch as exc:
        raise Refused("identity", str(exc)) from None
