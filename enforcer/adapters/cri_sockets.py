"""Where the CRI is served (containerd, cri-o): socket discovery without loading gRPC, so an
agent on a host without a CRI runtime never pays for importing it."""

from __future__ import annotations

import os

# Where containerd and cri-o serve the CRI by default (k3s keeps its own containerd).
# /var/run is usually a link to /run; both are listed for hosts where it is not.
DEFAULT_SOCKETS = (
    "/run/containerd/containerd.sock", "/run/crio/crio.sock",
    "/var/run/containerd/containerd.sock", "/var/run/crio/crio.sock",
    "/run/k3s/containerd/containerd.sock",
)


def candidates(explicit: str | None = None) -> list[str]:
    """Socket paths to try, in order: explicit (colon-separated), $ENFORCER_CRI_SOCKET (the
    same), then the defaults; a `unix://` prefix is allowed."""
    paths: list[str] = []
    for given in (explicit, os.environ.get("ENFORCER_CRI_SOCKET")):
        if given:
            paths += given.replace("unix://", "").split(":")
    paths += list(DEFAULT_SOCKETS)
    return [p for p in paths if p]


def find_socket(explicit: str | None = None) -> str | None:
    """The first CRI socket of `candidates(explicit)` that exists."""
    for path in candidates(explicit):
        if os.path.exists(path):
            return path
    return None
