"""The responder's admission: a policy's blast-radius breaker counts distinct workloads
(repeats from one are each answered, never trip it), suspends that policy alone for new
workloads (audited, critical alert, Kubernetes Event hook), resumes by command; escalation
adds its actions at the Nth repeat of one workload. Actions here are recorders: the
decisions are what is under test (the kernel and real kills are in tests/system)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.base import DONE, Action, Outcome, Params, Plan
from enforcer.alert import Alert
from enforcer.audit.jsonl import JsonlAudit, read_audit
from enforcer.policy.blast_radius import BlastRadius, BreakerLimits
from enforcer.policy.model import ActionStep, BreakerOverride, Escalation, Match, Policy, PolicySet
from enforcer.priority import Priority
from enforcer.respond.control import ControlServer, request
from enforcer.respond.responder import BREAKER_RULE, Responder


@dataclass(frozen=True)
class NoParams(Params):
    pass


class Recorder(Action):
    """A destructive action that records whom it acted on."""

    name = "kill"
    params_type = NoParams
    destructive = True
    done: list[str] = []

    def plan(self, context: Any) -> Plan:
        who = str(context.alert.event.get("container.id"))
        return Plan(action=self.name, target={"container": who}, render={}, summary=who)

    def apply(self, plan: Plan, dry_run: bool) -> Outcome:
        type(self).done.append(plan.target["container"])
        return Outcome(DONE, "recorded")


class Quarantine(Recorder):
    name = "quarantine"
    done: list[str] = []


def policy(name: str, rule: str, **extra: Any) -> Policy:
    return Policy(name=name, match=Match(rules=(rule,)),
                  actions=(ActionStep("kill", Recorder(NoParams())),), dry_run=False, **extra)


def alert(rule: str, container: str, pid: int = 1234) -> Alert:
    return Alert(rule=rule, priority=Priority.WARNING, output="x", output_fields={},
                 time_ns=time.time_ns(), event={"container.id": container, "proc.pid": pid})


def responder(tmp_path: Path, policies: list[Policy], limit: int = 3,
              **kw: Any) -> tuple[Responder, list[Alert]]:
    critical: list[Alert] = []
    r = Responder(PolicySet(policies), JsonlAudit(str(tmp_path / "audit.jsonl")),
                  blast_radius=BlastRadius(BreakerLimits(limit, 600, 600)),
                  on_critical=critical.append, realtime=False, **kw)
    return r, critical


def records(tmp_path: Path) -> list[dict[str, Any]]:
    return list(read_audit(str(tmp_path / "audit.jsonl")))


def test_one_workload_repeating_1000_times_is_answered_1000_times(tmp_path: Path) -> None:
    Recorder.done = []
    r, critical = responder(tmp_path, [policy("p", "R")])
    r.start()
    for pid in range(1000):  # fresh pids, one container
        r.submit(alert("R", "attacker", pid))
    r.drain()
    r.stop()
    assert Recorder.done == ["attacker"] * 1000
    assert not critical and r.stats()["suspended"] == []


def test_a_policy_over_its_blast_radius_is_suspended_alone(tmp_path: Path) -> None:
    Recorder.done = []
    outcomes: list[tuple[str, str]] = []
    r, critical = responder(tmp_path, [policy("wrong", "R"), policy("other", "S")],
                            on_outcome=lambda a, rec: outcomes.append((rec.action, rec.outcome)))
    r.start()
    for c in ("c1", "c2", "c3", "c4", "c5"):
        r.submit(alert("R", c))
    r.submit(alert("R", "c1"))       # answered before: still under it
    r.submit(alert("S", "c9"))       # another policy keeps acting
    r.drain()
    assert Recorder.done == ["c1", "c2", "c3", "c1", "c9"]
    assert [a.rule for a in critical] == [BREAKER_RULE]
    assert "'wrong' suspended for new workloads" in critical[0].output
    assert ("policy-suspended", "suppressed") in outcomes
    recs = records(tmp_path)
    assert [r_["policy"] for r_ in recs if r_["outcome"] == "tripped"] == ["wrong"]
    assert len([r_ for r_ in recs if r_["outcome"] == "suspended"]) == 2
    # resumed by command, through the control socket
    server = ControlServer(tmp_path / "control.sock", r).start()
    try:
        status = request(tmp_path / "control.sock", {"command": "status"})
        assert {p["policy"]: p["state"] for p in status["policies"]}["wrong"] == "suspended"
        assert request(tmp_path / "control.sock",
                       {"command": "resume", "policy": "wrong"}) == {"ok": True,
                                                                       "was": "suspended"}
        assert not request(tmp_path / "control.sock",
                           {"command": "resume", "policy": "nope"})["ok"]
    finally:
        server.stop()
    r.submit(alert("R", "c4"))
    r.drain()
    r.stop()
    assert Recorder.done[-1] == "c4"
    assert [r_["outcome"] for r_ in records(tmp_path) if r_["kind"] == "breaker"] == [
        "tripped", "resumed"]


def test_a_policy_may_set_its_own_breaker(tmp_path: Path) -> None:
    Recorder.done = []
    r, _ = responder(tmp_path, [policy("p", "R", breaker=BreakerOverride(workloads=1))])
    run = [r.submit(alert("R", c)) for c in ("c1", "c2")]
    r.start()
    r.drain()
    r.stop()
    assert run and Recorder.done == ["c1"]


def test_dry_run_policies_are_not_counted(tmp_path: Path) -> None:
    r, critical = responder(tmp_path, [policy("p", "R")], limit=1, dry_run=True)
    r.start()
    for c in ("c1", "c2", "c3"):
        r.submit(alert("R", c))
    r.drain()
    r.stop()
    assert not critical


def test_the_fifth_repeat_escalates(tmp_path: Path) -> None:
    Recorder.done, Quarantine.done = [], []
    esc = Escalation(after=5, within=60, actions=(ActionStep("quarantine",
                                                             Quarantine(NoParams())),))
    r, _ = responder(tmp_path, [policy("p", "R", escalate=esc)])
    r.start()
    for _ in range(4):
        r.submit(alert("R", "c1"))
    r.submit(alert("R", "c2"))
    r.drain()
    assert Quarantine.done == []
    r.submit(alert("R", "c1"))
    r.drain()
    r.stop()
    assert Quarantine.done == ["c1"] and len(Recorder.done) == 6
    act = [x for x in records(tmp_path) if x["kind"] == "decision"][-1]
    assert act["detail"]["escalated"]["actions"] == ["quarantine"]


class SlowSnapshot(Recorder):
    """Stands for a snapshot: not destructive, takes `delay` seconds."""

    name = "snapshot"
    destructive = False
    done: list[str] = []
    delay = 0.0

    def apply(self, plan: Plan, dry_run: bool) -> Outcome:
        time.sleep(type(self).delay)
        return super().apply(plan, dry_run)


def snapshot_then_kill(name: str, rule: str) -> Policy:
    return Policy(name=name, match=Match(rules=(rule,)), dry_run=False,
                  actions=(ActionStep("snapshot", SlowSnapshot(NoParams())),
                           ActionStep("kill", Recorder(NoParams()))))


def test_a_kill_waits_for_its_snapshot_then_goes_ahead_within_the_bound(
        tmp_path: Path) -> None:
    Recorder.done, SlowSnapshot.done = [], []
    SlowSnapshot.delay = 0.05
    r, _ = responder(tmp_path, [snapshot_then_kill("p", "R"), policy("other", "S")],
                     pre_kill_timeout=5.0)
    r.start()
    r.submit(alert("R", "c1"))
    r.drain()
    order = [x["action"] for x in records(tmp_path) if x["kind"] == "action"]
    assert order == ["snapshot", "kill"] and Recorder.done == ["c1"]
    # a snapshot that hangs: the kill goes ahead after the bound, audited; another
    # workload's kill is not held up meanwhile
    SlowSnapshot.delay = 8.0
    r.pre_kill_timeout = 0.3
    r.submit(alert("R", "c2"))
    r.submit(alert("S", "c9"))
    deadline = time.monotonic() + 6
    while Recorder.done.count("c2") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "c9" in Recorder.done and "c2" in Recorder.done and SlowSnapshot.done == ["c1"]
    r.drain()
    r.stop()
    late = [x for x in records(tmp_path) if x["outcome"] == "kill-not-waiting"]
    assert len(late) == 1 and "snapshot not done within 0.3s" in late[0]["reason"]


def in_kernel_policy(name: str, rule: str) -> Policy:
    from actions.kill import Kill, KillParams

    return Policy(name=name, match=Match(rules=(rule,)), dry_run=False,
                  actions=(ActionStep("kill", Kill(KillParams(in_kernel=True))),))


def test_the_kernel_arms_only_what_admission_would_answer(tmp_path: Path) -> None:
    r, _ = responder(tmp_path, [in_kernel_policy("p", "R")], limit=1)
    host = {"container.id": "host", "user.uid": 1000}.get
    other = {"container.id": "host", "user.uid": 1001}.get
    assert r.admits_in_kernel("R", host) and not r.admits_in_kernel("S", host)
    # guards: a protected namespace, or a container whose namespace is not known yet
    assert not r.admits_in_kernel("R", {"container.id": "abc", "container.name": "x",
                                        "k8s.ns.name": "kube-system"}.get)
    assert not r.admits_in_kernel("R", {"container.id": "abc"}.get)
    assert r.admits_in_kernel("R", {"container.id": "abc", "container.name": "x"}.get)
    # one workload answered: the policy is at its limit; the next new one trips it
    generation = r.kernel_generation()
    r.blast_radius.admit("p", ("user:1000",), r.breaker_limits(r.policies.policies[0]))
    assert r.kernel_generation() != generation
    assert r.admits_in_kernel("R", host) and not r.admits_in_kernel("R", other)


def test_status_says_whether_the_kernel_arms_by_the_current_states(tmp_path: Path) -> None:
    """`enforcer policies status` tells an operator (and a test) whether the in-kernel
    kill has caught up with a breaker's change: it is applied on the agent's next poll."""
    r, _ = responder(tmp_path, [in_kernel_policy("p", "R")], limit=1)
    control = ControlServer(tmp_path / "control.sock", r)
    r.blast_radius.admit("p", ("user:1000",), r.breaker_limits(r.policies.policies[0]))
    assert all("kernel_in_sync" not in p
               for p in control.handle(b'{"command": "status"}')["policies"])
    applied = {"generation": r.kernel_generation()}
    r.kernel_applied = lambda: applied["generation"]
    assert [p["kernel_in_sync"] for p in
            control.handle(b'{"command": "status"}')["policies"]] == [True]
    # a second new workload trips the breaker: the kernel lags until it applies the change
    r.blast_radius.admit("p", ("user:1001",), r.breaker_limits(r.policies.policies[0]))
    assert [p["kernel_in_sync"] for p in
            control.handle(b'{"command": "status"}')["policies"]] == [False]
    applied["generation"] = r.kernel_generation()
    assert [p["kernel_in_sync"] for p in
            control.handle(b'{"command": "status"}')["policies"]] == [True]
