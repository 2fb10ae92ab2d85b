"""cgroup v2 ids (what the probes stamp on every record, via bpf_get_current_cgroup_id)
-> cgroup paths, by the directory inode numbers of the cgroup2 mount. Cached; a miss
rescans, at most once per `rescan_interval` seconds."""

from __future__ import annotations

import os
import time

from enforcer.state.cgroups import HOST_IDENTITY, CgroupIdentity, identify


def cgroup2_mount(mounts_file: str = "/proc/self/mounts") -> str | None:
    """Where the unified (v2) hierarchy is mounted, if anywhere."""
    try:
        with open(mounts_file) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return parts[1]
    except OSError:
        pass
    return None


class CgroupIds:
    """id -> CgroupIdentity, from the cgroup2 mount."""

    def __init__(self, mount: str | None, rescan_interval: float = 0.05):
        self.mount = mount
        self.rescan_interval = rescan_interval
        self._paths: dict[int, str] = {}
        self._ident: dict[int, CgroupIdentity] = {}
        self._last_scan = 0.0
        if mount:
            self._scan()

    def _scan(self) -> None:
        self._last_scan = time.monotonic()
        base = self.mount
        if not base:
            return
        for root, _dirs, _files in os.walk(base):
            try:
                ino = os.stat(root).st_ino
            except OSError:
                continue
            self._paths[ino] = "/" + os.path.relpath(root, base).lstrip(".")

    def identity(self, cgroup_id: int) -> CgroupIdentity | None:
        """The container this cgroup id belongs to; None when unknown (fall back to /proc)."""
        if not self.mount or not cgroup_id:
            return None
        found = self._ident.get(cgroup_id)
        if found is not None:
            return found
        path = self._paths.get(cgroup_id)
        if path is None and time.monotonic() - self._last_scan >= self.rescan_interval:
            self._scan()
            path = self._paths.get(cgroup_id)
        if path is None:
            return None
        ident = identify(f"0::{path}") if path != "/" else HOST_IDENTITY
        self._ident[cgroup_id] = ident
        return ident
