"""The userspace backstop of an in-kernel kill: a process the kernel's SIGKILL already
reached (exiting, a zombie not yet reaped, or the signal still pending) is recorded as the
kernel's kill, never as one of its own; a process the kernel did not kill is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from actions.base import DONE, DONE_IN_KERNEL, Plan
from actions.kill import Kill, KillParams
from actions.process import ProcessHandle, read_stat


def _plan(handle: ProcessHandle) -> Plan:
    return Plan(action="kill", target={"pid": handle.pid}, render={}, summary="kill",
                private={"handles": [handle], "owned": [handle]})


def _until(check, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_zombie_the_kernel_killed_is_the_kernels_kill() -> None:
    child = subprocess.Popen(["sleep", "100"])
    handle = ProcessHandle.open(child.pid, None)
    try:
        assert not handle.dying()
        os.kill(child.pid, signal.SIGKILL)  # as the kernel does at the syscall
        _until(lambda: (s := read_stat(child.pid)) is not None and s.state == "Z",
               "the child never became a zombie")
        assert handle.alive()  # a zombie still takes signal 0: this was the false "done"
        assert handle.dying()
        outcome = Kill(KillParams(in_kernel=True)).apply(_plan(handle), dry_run=False)
        assert outcome.status == DONE_IN_KERNEL
    finally:
        child.kill()
        child.wait()
        handle.close()


def test_a_process_the_kernel_did_not_kill_is_killed_by_the_backstop() -> None:
    child = subprocess.Popen(["sleep", "100"])
    handle = ProcessHandle.open(child.pid, None)
    try:
        outcome = Kill(KillParams(in_kernel=True)).apply(_plan(handle), dry_run=False)
        assert outcome.status == DONE
        assert child.wait(30) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
        handle.close()
