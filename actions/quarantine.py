"""quarantine — immediate, node-local network isolation of the matched process's pod or
container: on its host-side veth, a tc classifier drops all traffic in both directions
except ARP, DNS (optional) and an allow-list of CIDRs (forensics). Reversible with
`enforcer release TARGET` (interface, container id, or namespace/pod).

RBAC: none (node-local; the agent needs hostNetwork and CAP_NET_ADMIN).

The target is found from the process's network namespace (pid verified by start time); a
process in the host's network namespace is refused, since isolating it would cut the node off.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.base import (
    DONE,
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
from actions.context import ActionContext
from actions.names import valid_namespace
from actions.networkpolicy import _cidrs
from actions.target_process import pinned_process


@dataclass(frozen=True)
class QuarantineParams(Params):
    allow_dns: bool = param(True, doc="let DNS (UDP/TCP port 53) through")
    allowed_cidrs: tuple[str, ...] = param((), parse=_cidrs,
                                           schema={"type": "array", "items": {"type": "string"}},
                                           doc="IPv4 CIDRs still reachable (forensics)")


class Quarantine(Action):
    name = "quarantine"
    params_type = QuarantineParams
    required_fields = ("proc.pid",)
    target_fields = ("container.id", "k8s.ns.name", "k8s.pod.name")
    destructive = True
    example = "- quarantine: {allow_dns: true, allowed_cidrs: [10.99.0.0/24]}"
    params: QuarantineParams

    def plan(self, context: ActionContext) -> Plan:
        namespace = context.field("k8s.ns.name")
        context.guards.check_target(
            valid_namespace(namespace) if namespace is not None else None,
            context.field("k8s.pod.name") or context.field("k8s.pod.uid"))
        pid = int(context.field("proc.pid"))
        if _same_netns(pid, os.getpid()):
            raise Refused("host-network", f"pid {pid} uses the agent's (host) network "
                                          "namespace; quarantining it would cut the node off")
        handle, owned = pinned_process(context, pid)
        try:
            link = context.services.netlink.host_side_of(pid)
        finally:
            if owned:
                handle.close()
        target = {"interface": link["ifname"], "ifindex": link["ifindex"], "pid": pid,
                  "container.id": context.field("container.id"),
                  "pod": _pod(context)}
        return Plan(action=self.name, target=target,
                    render={"interface": link["ifname"], "qdisc": "clsact",
                            "filters": ["ingress: bpf drop (far end = destination)",
                                        "egress: bpf drop (far end = source)"],
                            "allow": {"arp": True, "dns": self.params.allow_dns,
                                      "cidrs": list(self.params.allowed_cidrs)}},
                    summary=f"quarantine interface {link['ifname']} (pid {pid})",
                    private={"netlink": context.services.netlink,
                             "state_dir": context.state_dir, "rule": context.alert.rule})

    def apply(self, plan: Plan, dry_run: bool) -> Outcome:
        netlink = plan.private["netlink"]
        if dry_run:
            netlink.check_classifier(list(self.params.allowed_cidrs), self.params.allow_dns)
            return Outcome(DRY_RUN, "would " + plan.summary + " (classifier verified)")
        result = netlink.isolate(plan.target["ifindex"], list(self.params.allowed_cidrs),
                                 self.params.allow_dns)
        save_state(plan.private["state_dir"], plan.target | {
            "rule": plan.private["rule"], "time": time.time()})
        if result == "noop":
            return Outcome(NOOP, f"interface {plan.target['interface']} was already "
                                 "quarantined")
        return Outcome(DONE, plan.summary + "; undo with `enforcer release "
                             f"{plan.target['interface']}`")


def _same_netns(pid: int, other: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/proc/{other}/ns/net").st_ino
    except FileNotFoundError:
        raise AlreadyDone(f"process {pid} has already exited") from None


def _pod(context: ActionContext) -> str | None:
    ns, pod = context.field("k8s.ns.name"), context.field("k8s.pod.name")
    return f"{ns}/{pod}" if ns and pod else None


def state_path(state_dir: Path, interface: str) -> Path:
    return Path(state_dir) / "quarantine" / f"{interface}.json"


def save_state(state_dir: Path, record: dict[str, Any]) -> None:
    path = state_path(state_dir, record["interface"])
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(record, sort_keys=True))
    os.replace(temp, path)


def quarantined(state_dir: Path) -> list[dict[str, Any]]:
    """Every quarantine recorded in `state_dir`."""
    folder = Path(state_dir) / "quarantine"
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return found


def release(state_dir: Path, target: str, netlink: Any) -> list[dict[str, Any]]:
    """Lift the quarantines matching `target` (interface name, container id or prefix of
    at least 12 characters, or namespace/pod). Returns what was released, each with
    `result` done or noop. An interface name with no record is released directly."""
    chosen = [r for r in quarantined(state_dir) if _matches(r, target)]
    if not chosen and "/" not in target:
        for link in _interfaces_named(target, netlink):
            chosen.append({"interface": target, "ifindex": link})
    released = []
    for record in chosen:
        current = netlink.describe(record["ifindex"])
        if current["ifname"] != record["interface"]:
            result = "noop"  # the interface is gone and its index reused: leave it alone
        else:
            result = netlink.release(record["ifindex"])
        state_path(state_dir, record["interface"]).unlink(missing_ok=True)
        released.append(record | {"result": result})
    return released


def _matches(record: dict[str, Any], target: str) -> bool:
    container = record.get("container.id") or ""
    return (record.get("interface") == target or record.get("pod") == target
            or (len(target) >= 12 and container.startswith(target)))


def _interfaces_named(name: str, netlink: Any) -> list[int]:
    try:
        index = Path(f"/sys/class/net/{name}/ifindex").read_text().strip()
    except OSError:
        return []
    return [int(index)] if "/" not in name and name not in (".", "..") else []


ACTION = Quarantine
