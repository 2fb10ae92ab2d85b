"""Which alerts a policy answers, and the limits that key on structured fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.alert import Alert
from enforcer.errors import PolicyError
from enforcer.policy.loader import load_policies
from enforcer.policy.ratelimit import Cooldowns, TokenBucket
from enforcer.priority import Priority


def alert(rule: str = "Read sensitive file untrusted", priority: Priority = Priority.WARNING,
          tags: tuple[str, ...] = ("filesystem",), source: str = "syscall",
          **fields: object) -> Alert:
    event = {k.replace("_", "."): v for k, v in fields.items()}
    return Alert(rule=rule, priority=priority, output="x", output_fields={}, time_ns=0,
                 source=source, tags=tags, event=event)


@pytest.fixture
def policies(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text("""
- policy: by-rule-glob
  match: {rules: ["Read sensitive*"]}
  actions: [kill]
- policy: by-priority-and-tags
  match: {priority: ">=error", tags: [container, shell]}
  actions: [kill]
- policy: by-fields
  match: {fields: {k8s.ns.name: [prod, "stag*"], container.privileged: true}}
  actions: [kill]
- policy: by-source
  match: {source: k8s_audit}
  actions: [kill]
- policy: disabled
  enabled: false
  match: {rules: ["*"]}
  actions: [kill]
""")
    return load_policies([path])


def names(policies, a: Alert) -> list[str]:
    return [p.name for p in policies.select(a)]


def test_rule_globs(policies) -> None:
    assert names(policies, alert()) == ["by-rule-glob"]
    assert names(policies, alert(rule="Other")) == []


def test_priority_and_all_tags(policies) -> None:
    hit = alert(rule="Shell", priority=Priority.CRITICAL, tags=("container", "shell", "mitre"))
    assert names(policies, hit) == ["by-priority-and-tags"]
    assert names(policies, alert(rule="Shell", priority=Priority.WARNING,
                                 tags=("container", "shell"))) == []
    assert names(policies, alert(rule="Shell", priority=Priority.CRITICAL,
                                 tags=("container",))) == []


def test_field_conditions(policies) -> None:
    both = {"k8s.ns.name": "staging", "container.privileged": True}
    a = Alert(rule="R", priority=Priority.DEBUG, output="", output_fields={}, time_ns=0,
              event=both)
    assert names(policies, a) == ["by-fields"]
    a2 = Alert(rule="R", priority=Priority.DEBUG, output="", output_fields={}, time_ns=0,
               event={"k8s.ns.name": "dev", "container.privileged": True})
    assert names(policies, a2) == []
    missing = Alert(rule="R", priority=Priority.DEBUG, output="", output_fields={}, time_ns=0,
                    event={"container.privileged": True})
    assert names(policies, missing) == []


def test_source(policies) -> None:
    assert names(policies, alert(rule="R", source="k8s_audit")) == ["by-source"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_burst_then_refills() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=6, per=60, burst=3, clock=clock)
    assert [bucket.take() for _ in range(5)] == [True, True, True, False, False]
    clock.now += 10  # 6 per minute: one token every 10 s
    assert [bucket.take() for _ in range(2)] == [True, False]


def test_cooldown_per_key() -> None:
    clock = FakeClock()
    cool = Cooldowns(clock)
    cool.start(("p", 0, "pod-a"), 30)
    assert cool.active(("p", 0, "pod-a")) == 30
    assert cool.active(("p", 0, "pod-b")) == 0
    clock.now += 31
    assert cool.active(("p", 0, "pod-a")) == 0


def test_a_final_policy_is_the_last_to_answer_an_alert(tmp_path: Path) -> None:
    """`final: true` (Talon's rule `continue: false`): the matching policies after it in
    order do not answer the alert; when it does not match, they do."""
    path = tmp_path / "p.yaml"
    path.write_text("""
- policy: label-any
  match: {priority: ">=notice"}
  actions: [label_pod: {labels: {seen: "yes"}}]
- policy: stop-here
  final: true
  match: {rules: ["Read sensitive file untrusted"]}
  actions: [kill]
- policy: after
  match: {priority: ">=notice"}
  actions: [kill]
""")
    policies = load_policies([path])
    assert [p.name for p in policies.select(alert())] == ["label-any", "stop-here"]
    assert [p.name for p in policies.select(alert(rule="Other"))] == ["label-any", "after"]
    path.write_text(path.read_text().replace("final: true", "final: yes please"))
    with pytest.raises(PolicyError, match="final must be true or false"):
        load_policies([path])
