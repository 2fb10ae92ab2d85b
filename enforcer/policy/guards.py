"""Guards that no policy can switch off. Each check raises actions.base.Refused naming the
guard; the responder audits it as `suppressed`."""

from __future__ import annotations

import os
from collections.abc import Iterable

from actions.base import Refused
from actions.process import ancestors, is_kernel_thread, namespace_pids, read_stat
from enforcer.state.cgroups import identify

DEFAULT_PROTECTED_NAMESPACES = ("kube-system",)


class Guards:
    """What the agent never does, whatever a policy says.

    - never signal PID 1, a kernel thread, the agent, its ancestors or its descendants;
    - never reach PID 1 of a container unless the policy targets the whole container
      (container_init: not PID 1 of a pid namespace a host user or a workload made);
    - never touch a protected namespace (kube-system, the agent's own, and any configured);
    - only act on pods scheduled on this node (`node_name`)."""

    def __init__(self, protected_namespaces: Iterable[str] = DEFAULT_PROTECTED_NAMESPACES,
                 node_name: str | None = None, agent_pid: int | None = None,
                 agent_namespace: str | None = None):
        self.agent_pid = agent_pid or os.getpid()
        self.agent_namespace = agent_namespace or os.environ.get("POD_NAMESPACE") or None
        self.protected = set(protected_namespaces)
        if self.agent_namespace:
            self.protected.add(self.agent_namespace)
        self.node_name = node_name
        self.agent_ancestors = set(ancestors(self.agent_pid))

    def check_process(self, pid: int, *, allow_container_init: bool = False) -> None:
        if pid <= 1:
            raise Refused("pid1", f"pid {pid} is the host's init; never signalled")
        stat = read_stat(pid)
        if is_kernel_thread(pid, stat):
            raise Refused("kernel-thread", f"pid {pid} is a kernel thread; never signalled")
        if pid == self.agent_pid:
            raise Refused("agent", f"pid {pid} is the agent itself; never signalled")
        if pid in self.agent_ancestors:
            raise Refused("agent", f"pid {pid} is an ancestor of the agent; never signalled")
        if self.agent_pid in ancestors(pid):
            raise Refused("agent", f"pid {pid} is a descendant of the agent; never signalled")
        if not allow_container_init and container_init(pid):
            raise Refused("container-init",
                          f"pid {pid} is PID 1 of its container; only a policy with "
                          "kill scope 'container' may signal it")

    def check_namespace(self, namespace: str | None) -> None:
        if namespace and namespace in self.protected:
            raise Refused("protected-namespace",
                          f"namespace {namespace!r} is protected "
                          f"({', '.join(sorted(self.protected))}); no action touches it")

    def check_target(self, namespace: str | None, pod: str | None) -> None:
        """For an action on a process (kill, quarantine): refuse a protected namespace, and
        a pod whose namespace is unknown (its metadata not there yet): never act on a guess.
        A host process or a container outside Kubernetes has no namespace: not refused."""
        if namespace:
            self.check_namespace(namespace)
        elif pod:
            raise Refused("unknown-namespace",
                          f"the namespace of pod {pod} is unknown (no Kubernetes metadata "
                          "yet), so the protected-namespace guard cannot be checked; not "
                          "acting")

    def check_node(self, pod: str, pod_node: str | None) -> None:
        if not self.node_name:
            raise Refused("node", "NODE_NAME is not set, so the agent cannot tell whether "
                                  f"pod {pod} runs on this node; set NODE_NAME (downward API)")
        if pod_node != self.node_name:
            raise Refused("node", f"pod {pod} is scheduled on node {pod_node!r}, not on this "
                                  f"node {self.node_name!r}")



def container_init(pid: int) -> bool:
    """Whether `pid` is a container's PID 1, which only a kill of scope container may
    signal: PID 1 of a pid namespace right below ours, in a container (its cgroup names
    one). PID 1 of a namespace nested deeper is one the workload made inside its container
    (`unshare -Urpf cat /etc/shadow`), and PID 1 of a namespace a host user made is no
    container's: both are ordinary processes, sparing them would let any attack escape the
    kill. The in-kernel kill arms by the same rule (enforcer.kernel.arming.container_init)."""
    nspids = namespace_pids(pid)
    if len(nspids) != 2 or nspids[-1] != 1:
        return False
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as handle:
            return bool(identify(handle.read()).full_id)
    except OSError:
        return False
