"""uid/gid -> names, as the process sees them: a container's own /etc/passwd when it has
one (read through /proc/PID/root), the host's otherwise. Cached per (root, id)."""

from __future__ import annotations

import grp
import pwd


def _parse(raw: str) -> dict[int, str]:
    names: dict[int, str] = {}
    for line in raw.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            names.setdefault(int(parts[2]), parts[0])
    return names


class Names:
    """Name lookups for user.name, user.loginname and group.name."""

    def __init__(self, proc_root: str = "/proc"):
        self.proc_root = proc_root
        self._files: dict[tuple[str, str], dict[int, str] | None] = {}
        self._host_users: dict[int, str | None] = {}
        self._host_groups: dict[int, str | None] = {}

    def _container_table(self, container_id: str, pid: int, kind: str) -> dict[int, str] | None:
        key = (container_id, kind)
        if key not in self._files:
            try:
                with open(f"{self.proc_root}/{pid}/root/etc/{kind}") as fh:
                    self._files[key] = _parse(fh.read())
            except OSError:
                return None  # not cached: a later event of a live process may succeed
        return self._files[key]

    def user(self, uid: int, container_id: str = "host", pid: int = 0) -> str | None:
        """The user name for uid, or None when no table knows it."""
        if container_id != "host" and pid:
            table = self._container_table(container_id, pid, "passwd")
            if table is not None:
                return table.get(uid)
        if uid not in self._host_users:
            try:
                self._host_users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._host_users[uid] = None
        return self._host_users[uid]

    def group(self, gid: int, container_id: str = "host", pid: int = 0) -> str | None:
        """The group name for gid, or None when no table knows it."""
        if container_id != "host" and pid:
            table = self._container_table(container_id, pid, "group")
            if table is not None:
                return table.get(gid)
        if gid not in self._host_groups:
            try:
                self._host_groups[gid] = grp.getgrgid(gid).gr_name
            except KeyError:
                self._host_groups[gid] = None
        return self._host_groups[gid]
