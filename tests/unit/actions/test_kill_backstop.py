"""The userspace backstop of an in-kernel kill: a process the kernel killed (by the kernel's
own record of whom it killed) is recorded as the kernel's kill, never as one of its own; a
process that exited or is exiting without the kernel's kill is not claimed by either; a
process the kernel did not kill is killed.

The kernel's record is the in-kernel kill's `killed` map (tests/system/test_in_kernel_kill.py
reads it for real); here it is the answer the plan carries."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from actions.base import DONE, DONE_IN_KERNEL, NOOP, Plan
from actions.kill import Kill, KillParams
from actions.process import ProcessHandle, read_stat


def _plan(handle: ProcessHandle, killed_in_kernel: bool | None = None) -> Plan:
    private = {"handles": [handle], "owned": [handle]}
    if killed_in_kernel is not None:
        private["killed_in_kernel"] = lambda: killed_in_kernel
    return Plan(action="kill", target={"pid": handle.pid}, render={}, summary="kill",
                private=private)


def _until(check, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_zombie_is_the_kernels_kill_only_by_the_kernels_record() -> None:
    child = subprocess.Popen(["sleep", "100"])
    handle = ProcessHandle.open(child.pid, None)
    try:
        assert not handle.dying()
        os.kill(child.pid, signal.SIGKILL)  # as the kernel does at the syscall
        _until(lambda: (s := read_stat(child.pid)) is not None and s.state == "Z",
               "the child never became a zombie")
        assert handle.alive()  # a zombie still takes signal 0: this was the false "done"
        assert handle.dying()
        kill = Kill(KillParams(in_kernel=True))
        assert kill.apply(_plan(handle, killed_in_kernel=True), dry_run=False).status \
            == DONE_IN_KERNEL
        # not in the kernel's record (it exited on its own, or another hand killed it):
        # neither the kernel's kill nor this backstop's (this was "done-in-kernel" in CI
        # for processes the kernel had never armed)
        for plan in (_plan(handle, killed_in_kernel=False), _plan(handle)):
            outcome = kill.apply(plan, dry_run=False)
            assert outcome.status == NOOP and "did not kill" in outcome.message
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
