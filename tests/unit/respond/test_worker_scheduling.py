"""The responder's worker runs a kill at real-time priority and every other action with
ordinary scheduling; the follow-up thread (uploads) never inherits real-time."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actions import kill as kill_module
from actions import snapshot as snapshot_module
from actions.process import read_stat
from enforcer.alert import Alert
from enforcer.audit.jsonl import JsonlAudit, read_audit
from enforcer.policy.loader import load_policies
from enforcer.priority import Priority
from enforcer.respond.responder import Responder
from enforcer.respond.scheduling import WorkerPriority
from tests.system.victims import spawn


def _spy(monkeypatch: pytest.MonkeyPatch, cls: type, seen: dict[str, int]) -> None:
    apply = cls.apply

    def recorded(self: Any, plan: Any, dry_run: bool) -> Any:
        seen[self.name] = os.sched_getscheduler(0)  # this thread's policy
        return apply(self, plan, dry_run)

    monkeypatch.setattr(cls, "apply", recorded)


def test_kill_at_real_time_other_actions_and_follow_ups_ordinary(
        need_root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, int] = {}
    _spy(monkeypatch, kill_module.Kill, seen)
    _spy(monkeypatch, snapshot_module.Snapshot, seen)
    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "f").write_text("x")
    victim = spawn(["/bin/sleep", "60"], tmp_path, name="victim")
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
- policy: p
  match: {{rules: [R]}}
  actions:
    - snapshot: {{paths: [{tmp_path / 'evidence'}], changed: false}}
    - kill: {{}}
  dry_run: false
""")
    audit = tmp_path / "audit.jsonl"
    responder = Responder(load_policies([policy]), JsonlAudit(audit),
                          snapshot_dir=tmp_path / "snapshots").start()
    try:
        event = {"proc.pid": victim.pid, "proc.start_ticks": read_stat(victim.pid).start_ticks}
        responder.submit(Alert(rule="R", priority=Priority.WARNING, output="o",
                               output_fields={}, time_ns=time.time_ns(), event=event))
        responder.drain()
        worker, follow_ups = responder.thread, responder.follow_up_thread
        assert worker is not None and follow_ups is not None
        if not responder.scheduling.realtime:
            pytest.fail(f"the worker could not get real-time priority as root: "
                        f"{responder.scheduling.describe()}")
        assert os.sched_getscheduler(worker.native_id) == os.SCHED_FIFO
        assert os.sched_getscheduler(follow_ups.native_id) == os.SCHED_OTHER
        assert responder.stats()["worker"] == "SCHED_FIFO 10"
    finally:
        responder.stop()
        victim.cleanup()
    assert seen == {"snapshot": os.SCHED_OTHER, "kill": os.SCHED_FIFO}
    outcomes = [(r["action"], r["outcome"]) for r in read_audit(audit) if r["kind"] == "action"]
    assert outcomes == [("snapshot", "done"), ("kill", "done")]
    assert victim.exit_code() == -9


def test_without_real_time_the_worker_gets_nice_and_says_so() -> None:
    sched = WorkerPriority(realtime=False)
    seen: list[int] = []

    def worker() -> None:  # its own thread: the test's thread keeps its priority
        sched.raise_()
        with sched.ordinary():  # a no-op when not real-time
            seen.append(os.sched_getscheduler(0))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert not sched.realtime and seen == [os.SCHED_OTHER]
    if os.geteuid() == 0:
        assert sched.describe() == "nice -10"
