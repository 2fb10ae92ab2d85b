"""quarantine — immediate, node-local network isolation of the matched process's pod or
container: on its host-side veth, a tc classifier drops all traffic in both directions
except ARP, DNS (optional) and an allow-list of CIDRs (forensics). Reversible with
`enforcer release TARGET` (interface, container id, or namespace/pod).

DNS passes only to and from port 53 of the cluster's DNS servers: `dns_servers` when the
policy names them, else the IPv4 `nameserver` lines of `resolv_conf` (the agent's
/etc/resolv.conf: with hostNetwork and dnsPolicy ClusterFirstWithHostNet, the cluster DNS
service), loopback addresses left out (a node-local resolver on 127.x means nothing inside a
pod). Never port 53 of any address: that would leave a command channel to any host open.
When no server is found, the pod is isolated without DNS, and the outcome says so.

RBAC: none (node-local; the agent needs hostNetwork and CAP_NET_ADMIN).

The target is found from the process's network namespace (pid verified by start time); a
process in the host's network namespace is refused, since isolating it would cut the node off.
When the process is gone (the in-kernel kill killed it before an escalation ran), the
namespace is that of another live process of its container (actions/container_member.py).
"""

from __future__ import annotations

import ipaddress
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
from actions.container_member import live_member
from actions.context import ActionContext
from actions.names import valid_namespace
from actions.networkpolicy import _cidrs
from actions.target_process import pinned_process


def _ipv4s(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of IPv4 addresses, got {value!r}")
    try:
        found = tuple(str(ipaddress.IPv4Address(str(v))) for v in value)
    except ValueError as exc:
        raise ValueError(f"{exc} (an IPv4 address such as 10.96.0.10)") from None
    return found


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected an absolute path, got {value!r}")
    return value


def nameservers(text: str) -> list[str]:
    """The IPv4 `nameserver` addresses of a resolv.conf text, loopback ones left out, in
    order and without repeats."""
    found: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        try:
            address = ipaddress.IPv4Address(fields[1])
        except ValueError:
            continue  # IPv6 (the classifier passes no IPv6) or garbage
        if not address.is_loopback and str(address) not in found:
            found.append(str(address))
    return found


@dataclass(frozen=True)
class QuarantineParams(Params):
    allow_dns: bool = param(True, doc="let DNS (UDP/TCP port 53) through, to and from the "
                                      "cluster's DNS servers only")
    dns_servers: tuple[str, ...] = param((), parse=_ipv4s,
                                         schema={"type": "array",
                                                 "items": {"type": "string"}},
                                         doc="the DNS servers a quarantined pod may still "
                                             "ask (default: the nameservers of resolv_conf)")
    resolv_conf: str = param("/etc/resolv.conf", parse=_path, schema={"type": "string"},
                             doc="where the DNS servers are read when dns_servers is empty")
    allowed_cidrs: tuple[str, ...] = param((), parse=_cidrs,
                                           schema={"type": "array", "items": {"type": "string"}},
                                           doc="IPv4 CIDRs still reachable (forensics)")


class Quarantine(Action):
    name = "quarantine"
    params_type = QuarantineParams
    required_fields = ("proc.pid",)
    target_fields = ("container.id", "k8s.ns.name", "k8s.pod.name")
    destructive = True
    example = ("- quarantine: {allow_dns: true, dns_servers: [10.96.0.10], "
               "allowed_cidrs: [10.99.0.0/24]}")
    params: QuarantineParams

    def plan(self, context: ActionContext) -> Plan:
        namespace = context.field("k8s.ns.name")
        context.guards.check_target(
            valid_namespace(namespace) if namespace is not None else None,
            context.field("k8s.pod.name") or context.field("k8s.pod.uid"))
        pid = int(context.field("proc.pid"))
        via = ""
        try:
            handle, owned = pinned_process(context, pid)
            if not _has_netns(pid):  # dead, or a zombie: its namespaces are gone
                if owned:
                    handle.close()
                raise AlreadyDone(f"process {pid} has already exited")
        except AlreadyDone:
            # gone (killed in the kernel before an escalation): the container's network
            # namespace is still there, reached through another of its live processes
            member = live_member(context.event)
            if member is None:
                raise
            handle, owned = member, True
            via = f" is gone; found through pid {member.pid} of its container"
        try:
            if _same_netns(handle.pid, os.getpid()):
                raise Refused("host-network", f"pid {handle.pid} uses the agent's (host) "
                                              "network namespace; quarantining it would cut "
                                              "the node off")
            link = context.services.netlink.host_side_of(handle.pid)
            if not handle.alive():  # its pid may have been reused while we looked
                raise AlreadyDone(f"process {handle.pid} exited while its network namespace "
                                  "was looked up")
        finally:
            if owned:
                handle.close()
        target = {"interface": link["ifname"], "ifindex": link["ifindex"], "pid": pid,
                  "container.id": context.field("container.id"),
                  "pod": _pod(context)}
        if via:
            target["via_pid"] = handle.pid
        dns = self._dns_servers()
        return Plan(action=self.name, target=target,
                    render={"interface": link["ifname"], "qdisc": "clsact",
                            "filters": ["ingress: bpf drop (far end = destination)",
                                        "egress: bpf drop (far end = source)"],
                            "allow": {"arp": True, "dns": dns,
                                      "cidrs": list(self.params.allowed_cidrs)}},
                    summary=f"quarantine interface {link['ifname']} (pid {pid}{via})",
                    private={"netlink": context.services.netlink,
                             "state_dir": context.state_dir, "rule": context.alert.rule})

    def _dns_servers(self) -> list[str]:
        if not self.params.allow_dns:
            return []
        if self.params.dns_servers:
            return list(self.params.dns_servers)
        try:
            with open(self.params.resolv_conf, encoding="utf-8", errors="replace") as fh:
                return nameservers(fh.read(65536))
        except OSError:
            return []

    def apply(self, plan: Plan, dry_run: bool) -> Outcome:
        netlink = plan.private["netlink"]
        dns = plan.render["allow"]["dns"]
        note = ""
        if self.params.allow_dns and not dns:
            note = (f" (no DNS: no IPv4 nameserver in {self.params.resolv_conf} and no "
                    "dns_servers in the policy)")
        if dry_run:
            netlink.check_classifier(list(self.params.allowed_cidrs), dns)
            return Outcome(DRY_RUN, "would " + plan.summary + note + " (classifier verified)")
        result = netlink.isolate(plan.target["ifindex"], list(self.params.allowed_cidrs), dns)
        save_state(plan.private["state_dir"], plan.target | {
            "rule": plan.private["rule"], "time": time.time()})
        if result == "noop":
            return Outcome(NOOP, f"interface {plan.target['interface']} was already "
                                 "quarantined")
        return Outcome(DONE, plan.summary + note + "; undo with `enforcer release "
                             f"{plan.target['interface']}`")


def _has_netns(pid: int) -> bool:
    try:
        os.stat(f"/proc/{pid}/ns/net")
        return True
    except OSError:
        return False


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
