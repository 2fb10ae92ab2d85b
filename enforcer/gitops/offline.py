"""Actions as `enforcer test` plans them: with no node, no process and no cluster.

Each policy's actions are wrapped so that `plan` checks what can be known from the event
alone — the guards on namespaces and names, PID 1, the kill's process start time — and
names the target from the event's fields, and `apply` only says what would be done. The
real responder runs around them (policy selection, order, rate limits, cooldowns, missing
fields, on_failure, forced dry-run), so a test exercises the same decisions as the agent;
nothing is looked up or mutated."""

from __future__ import annotations

import dataclasses
from typing import Any

from actions.base import DRY_RUN, Action, Outcome, Plan, Refused
from actions.context import ActionContext, MissingFields
from actions.names import valid_namespace, valid_object_name
from actions.process import expected_start
from enforcer.policy.model import PolicySet

#: event field -> target key, as the real plans name them
TARGET_KEYS = {"proc.pid": "pid", "container.id": "container", "k8s.ns.name": "namespace",
               "k8s.pod.name": "pod"}


class OfflineAction(Action):
    """Wraps a configured action: same name, fields, params and destructiveness."""

    def __init__(self, inner: Action):
        super().__init__(inner.params)
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.params_type = inner.params_type  # type: ignore[misc]
        self.required_fields = inner.required_fields  # type: ignore[misc]
        self.target_fields = inner.target_fields  # type: ignore[misc]
        self.destructive = inner.destructive  # type: ignore[misc]
        self.mutating = inner.mutating  # type: ignore[misc]

    def plan(self, context: ActionContext) -> Plan:
        target: dict[str, Any] = {}
        for name in dict.fromkeys(self.required_fields + self.target_fields):
            value = context.field(name)
            if value is not None and name in TARGET_KEYS:
                target[TARGET_KEYS[name]] = value
        if "namespace" in target and self.mutating:
            valid_namespace(target["namespace"])
            context.guards.check_namespace(target["namespace"])
        if "pod" in target:
            valid_object_name(target["pod"])
        if self.name == "kill":
            if int(target["pid"]) <= 1:
                raise Refused("pid1", f"pid {target['pid']} is the host's init; never "
                                      "signalled")
            if expected_start(context.event) is None and \
                    getattr(self.params, "require_start_time", False):
                raise MissingFields(["proc.start_ticks or proc.pid.ts (process start time)"])
        if self.name == "cordon":
            target["node"] = context.node_name
        if self.name == "notify":
            target["url"] = getattr(self.params, "url", None)
        params = dataclasses.asdict(self.params)
        return Plan(action=self.name, target=target, render={"params": params},
                    summary=f"{self.name} {target}")

    def apply(self, plan: Plan, dry_run: bool) -> Outcome:
        if not dry_run:  # the test runner forces dry-run; never act from a test
            raise RuntimeError("offline actions only plan")
        return Outcome(DRY_RUN, "would " + plan.summary)


def offline_policies(policies: PolicySet) -> PolicySet:
    """The same policies with every action wrapped in OfflineAction."""
    wrapped = [dataclasses.replace(p, actions=tuple(
        dataclasses.replace(s, action=OfflineAction(s.action)) for s in p.actions))
        for p in policies.policies]
    return PolicySet(policies=wrapped, warnings=list(policies.warnings),
                     files=list(policies.files))
