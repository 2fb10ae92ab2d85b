"""Node-local network isolation with pyroute2: on a pod's host-side veth, a clsact qdisc
with a direct-action BPF classifier on both hooks drops everything but ARP and an
allow-list. Removing the qdisc releases the pod. Idempotent: a qdisc we already installed
is `noop`; releasing an interface that is not isolated is `noop`."""

from __future__ import annotations

import errno
import os
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from enforcer.adapters import tcbpf
from enforcer.errors import PermanentActionError, TemporaryActionError

INGRESS = 0xFFFFFFF2
EGRESS = 0xFFFFFFF3
FILTER_NAME = "enforcer-quarantine"


def host_side_of(pid: int) -> dict[str, Any]:
    """The host-side interface of the veth that connects `pid`'s network namespace:
    {"ifname", "ifindex", "netnsid"}. Raises PermanentActionError when there is none (the
    process shares the host's network, or uses no veth)."""
    own = os.stat("/proc/self/ns/net").st_ino
    if os.stat(f"/proc/{pid}/ns/net").st_ino == own:
        raise PermanentActionError(f"pid {pid} uses the host's network namespace; "
                                   "quarantining it would cut the node off")
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        with IPRoute() as ipr:
            nsid = _nsid(ipr, fd)
            candidates = []
            for link in ipr.get_links():
                if link.get_attr("IFLA_LINK_NETNSID") != nsid:
                    continue
                info = link.get_attr("IFLA_LINKINFO")
                kind = info.get_attr("IFLA_INFO_KIND") if info else None
                if kind == "veth":
                    candidates.append({"ifname": link.get_attr("IFLA_IFNAME"),
                                       "ifindex": link["index"], "netnsid": nsid})
    finally:
        os.close(fd)
    if not candidates:
        raise PermanentActionError(f"no host-side veth leads to pid {pid}'s network "
                                   "namespace")
    if len(candidates) > 1:
        raise PermanentActionError(
            f"pid {pid}'s network namespace has {len(candidates)} host-side veths "
            f"({', '.join(c['ifname'] for c in candidates)}); refusing to guess")
    return candidates[0]


def _nsid(ipr: IPRoute, fd: int) -> int:
    found = ipr.get_netnsid(fd=fd)
    nsid = found.get("nsid") if isinstance(found, dict) else None
    if nsid is None or nsid < 0:
        ipr.set_netnsid(fd=fd)
        nsid = ipr.get_netnsid(fd=fd).get("nsid")
    return nsid


def describe(ifindex: int) -> dict[str, Any]:
    """Name and kind of an interface. Raises PermanentActionError when absent."""
    with IPRoute() as ipr:
        try:
            (link,) = ipr.get_links(ifindex)
        except NetlinkError as exc:
            raise PermanentActionError(f"no interface with index {ifindex}") from exc
        info = link.get_attr("IFLA_LINKINFO")
        return {"ifname": link.get_attr("IFLA_IFNAME"), "ifindex": ifindex,
                "kind": info.get_attr("IFLA_INFO_KIND") if info else None}


def is_isolated(ifindex: int) -> bool:
    with IPRoute() as ipr:
        for parent in (INGRESS, EGRESS):
            try:
                filters = ipr.get_filters(index=ifindex, parent=parent)
            except NetlinkError:
                return False
            names = [_filter_name(f) for f in filters]
            if FILTER_NAME not in names:
                return False
    return True


def _filter_name(msg: Any) -> str | None:
    options = msg.get_attr("TCA_OPTIONS")
    return options.get_attr("TCA_BPF_NAME") if options else None


def check_classifier(allowed: list[str], dns_servers: list[str]) -> None:
    """Load (and drop) the classifiers, so a dry-run proves the kernel accepts them."""
    try:
        for direction in ("dst", "src"):
            os.close(tcbpf.load(tcbpf.program(direction, allowed, dns_servers),
                                "enf_q_check"))
    except OSError as exc:
        raise PermanentActionError(f"cannot load the quarantine classifier: {exc}") from exc


def isolate(ifindex: int, allowed: list[str], dns_servers: list[str]) -> str:
    """Install the quarantine on `ifindex`: only ARP, `allowed` CIDRs and port 53 of
    `dns_servers` pass. Returns "done" or "noop" (already there)."""
    if is_isolated(ifindex):
        return "noop"
    fds = []
    try:
        fds = [tcbpf.load(tcbpf.program("dst", allowed, dns_servers), "enf_q_out"),
               tcbpf.load(tcbpf.program("src", allowed, dns_servers), "enf_q_in")]
    except OSError as exc:
        raise PermanentActionError(f"cannot load the quarantine classifier: {exc}") from exc
    try:
        with IPRoute() as ipr:
            try:
                ipr.tc("add", "clsact", ifindex)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
            for parent, fd in ((INGRESS, fds[0]), (EGRESS, fds[1])):
                ipr.tc("add-filter", "bpf", ifindex, parent=parent, fd=fd, name=FILTER_NAME,
                       direct_action=True, prio=1)
    except NetlinkError as exc:
        raise _translate(exc, ifindex) from exc
    finally:
        for fd in fds:
            os.close(fd)
    return "done"


def release(ifindex: int) -> str:
    """Remove the quarantine. Returns "done" or "noop" (nothing to remove)."""
    if not is_isolated(ifindex):
        return "noop"
    try:
        with IPRoute() as ipr:
            ipr.tc("del", "clsact", ifindex)
    except NetlinkError as exc:
        if exc.code in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            return "noop"
        raise _translate(exc, ifindex) from exc
    return "done"


def _translate(exc: NetlinkError, ifindex: int) -> Exception:
    if exc.code in (errno.EBUSY, errno.EAGAIN, errno.ENOBUFS):
        return TemporaryActionError(f"netlink busy on interface {ifindex}: {exc}")
    return PermanentActionError(f"netlink refused on interface {ifindex}: {exc}")
