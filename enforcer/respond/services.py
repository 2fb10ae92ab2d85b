"""Adapters for actions, created on first use so that a policy set without Kubernetes
actions never needs a cluster, and one without quarantine never opens netlink."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Services:
    """`kube`: enforcer.adapters.kube.KubeAdapter; `netlink`: enforcer.adapters.netlink;
    `kernel_kills`: the in-kernel kill's own record of whom it killed (set once it loads).

    Tests and embedders pass ready adapters; otherwise they are built from the environment
    (in-cluster service account, or KUBECONFIG) when an action first asks."""

    def __init__(self, kube: Any = None, netlink: Any = None,
                 kernel_kills: Callable[[int, int | None], bool] | None = None):
        self._kube = kube
        self._netlink = netlink
        # (pid, start ticks) -> whether the in-kernel kill killed it; None: not loaded
        self.kernel_kills = kernel_kills
        self._lock = threading.Lock()

    @property
    def kube(self) -> Any:
        with self._lock:
            if self._kube is None:
                from enforcer.adapters.kube import KubeAdapter
                self._kube = KubeAdapter.from_environment()
            return self._kube

    @property
    def netlink(self) -> Any:
        with self._lock:
            if self._netlink is None:
                from enforcer.adapters import netlink
                self._netlink = netlink
            return self._netlink
