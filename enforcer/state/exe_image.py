"""What Falco's execve exit event says about a process's credentials and executable:
its capability sets and, for the file it runs, the inode number, ctime, mtime and whether
the process could write it (`proc.exe_ino*`, `proc.is_exe_writable`, `thread.cap_*`).

Falco's driver reads these from the kernel at exec. We read them from /proc/PID while the
process is there (the tracker handles its exec event within milliseconds), once per exec,
and keep them on the process: a process that has exited still has them when a rule or an
output asks.
"""

from __future__ import annotations

import fcntl
import os
import stat
from dataclasses import dataclass

from enforcer.state.capabilities import has_cap

_FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long) on 64-bit
_FS_IMMUTABLE_FL = 0x10
_MAX_CACHE = 4096


@dataclass(frozen=True, slots=True)
class Creds:
    """The credentials in /proc/PID/status that exec-time fields depend on."""

    fsuid: int = 0
    fsgid: int = 0
    groups: frozenset[int] = frozenset()
    cap_inheritable: int = 0
    cap_permitted: int = 0
    cap_effective: int = 0


def _line(status: bytes, key: bytes) -> bytes | None:
    at = status.find(key)
    if at < 0:
        return None
    at += len(key)
    end = status.find(b"\n", at)
    return status[at:] if end < 0 else status[at:end]


def parse_status(status: bytes) -> Creds | None:
    """Creds from the text of /proc/PID/status; None when it has no capability lines.
    (Read at every exec: a few `find`s rather than a walk over its fifty-odd lines.)"""
    cap_eff = _line(status, b"\nCapEff:")
    if cap_eff is None:
        return None
    uid, gid = _line(status, b"\nUid:"), _line(status, b"\nGid:")
    groups = _line(status, b"\nGroups:")
    inh, prm = _line(status, b"\nCapInh:"), _line(status, b"\nCapPrm:")
    return Creds(fsuid=int(uid.split()[3]) if uid else 0,
                 fsgid=int(gid.split()[3]) if gid else 0,
                 groups=frozenset(int(g) for g in groups.split()) if groups else frozenset(),
                 cap_inheritable=int(inh, 16) if inh else 0,
                 cap_permitted=int(prm, 16) if prm else 0,
                 cap_effective=int(cap_eff, 16))


@dataclass(frozen=True, slots=True)
class ExeImage:
    """The executable file a process runs, as it was when the process exec'd it."""

    ino: int
    ctime_ns: int
    mtime_ns: int
    writable: bool


class ExeInspector:
    """Reads ExeImage from /proc/PID/exe. The two facts that cost more than a stat are
    cached: whether a filesystem is mounted read-only (per device) and whether a file is
    immutable (per device, inode and ctime, which `chattr` changes)."""

    def __init__(self, proc_root: str = "/proc"):
        self.proc_root = proc_root
        self._sb_readonly: dict[int, bool] = {}
        self._immutable: dict[tuple[int, int, int], bool] = {}

    def capture(self, pid: int, creds: Creds | None) -> ExeImage | None:
        """The image of the process's executable now; None when the process is gone."""
        return self.image_of(f"{self.proc_root}/{pid}/exe", pid, creds)

    def image_of(self, path: str, pid: int, creds: Creds | None) -> ExeImage | None:
        """The image of the executable file at `path`, run by process `pid` with `creds`."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        writable = creds is not None and self._writable(pid, path, st, creds)
        return ExeImage(ino=st.st_ino, ctime_ns=st.st_ctime_ns, mtime_ns=st.st_mtime_ns,
                        writable=writable)

    # Falco's test, in the driver: false on a read-only superblock or an immutable inode;
    # true for the owner; else the group or other write bit, as acl_permission_check()
    # picks it; else CAP_DAC_OVERRIDE (owner and group mapped in the process's user
    # namespace) or CAP_FOWNER (owner mapped).
    def _writable(self, pid: int, exe: str, st: os.stat_result, creds: Creds) -> bool:
        if not self._permits(pid, st, creds):
            return False
        if stat.S_ISREG(st.st_mode) and self._readonly_fs(pid, st.st_dev):
            return False
        return not self._is_immutable(exe, st)

    def _permits(self, pid: int, st: os.stat_result, creds: Creds) -> bool:
        if st.st_uid == creds.fsuid:
            return True
        mode = st.st_mode
        if st.st_gid == creds.fsgid or st.st_gid in creds.groups:
            mode >>= 3
        if mode & stat.S_IWOTH:
            return True
        dac = has_cap(creds.cap_effective, "CAP_DAC_OVERRIDE")
        fowner = has_cap(creds.cap_effective, "CAP_FOWNER")
        if not (dac or fowner):
            return False
        uid_mapped = _mapped(f"{self.proc_root}/{pid}/uid_map", st.st_uid)
        if dac and uid_mapped and _mapped(f"{self.proc_root}/{pid}/gid_map", st.st_gid):
            return True
        return fowner and uid_mapped

    def _readonly_fs(self, pid: int, dev: int) -> bool:
        found = self._sb_readonly.get(dev)
        if found is None:
            # the process's own mount table shows the superblock of its root (a
            # container's overlay is often in no other mount namespace)
            table = _superblocks(f"{self.proc_root}/{pid}/mountinfo")
            if table is None:
                return False  # gone: unknown, and not worth remembering
            if len(self._sb_readonly) >= _MAX_CACHE:
                self._sb_readonly.clear()
            self._sb_readonly.update(table)
            found = self._sb_readonly.setdefault(dev, False)
        return found

    def _is_immutable(self, exe: str, st: os.stat_result) -> bool:
        key = (st.st_dev, st.st_ino, st.st_ctime_ns)
        found = self._immutable.get(key)
        if found is None:
            if len(self._immutable) >= _MAX_CACHE:
                self._immutable.clear()
            found = self._immutable[key] = _immutable_flag(exe)
        return found


def _superblocks(mountinfo: str) -> dict[int, bool] | None:
    """Device number -> whether its superblock is read-only (the options after ` - `)."""
    try:
        with open(mountinfo, "rb") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    found: dict[int, bool] = {}
    for line in lines:
        head, sep, tail = line.partition(b" - ")
        fields = head.split()
        rest = tail.split()
        if not sep or len(fields) < 3 or len(rest) < 3:
            continue
        major, _, minor = fields[2].partition(b":")
        try:
            dev = os.makedev(int(major), int(minor))
        except ValueError:
            continue
        found[dev] = b"ro" in rest[2].split(b",")
    return found


def _immutable_flag(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        flags = bytearray(8)
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags)
        return bool(int.from_bytes(flags, "little") & _FS_IMMUTABLE_FL)
    except OSError:
        return False  # the filesystem has no inode flags
    finally:
        os.close(fd)


def _mapped(id_map: str, ident: int) -> bool:
    """Whether `ident` (as the host sees it) has an id in the user namespace whose map
    this is; a process whose map cannot be read is taken to be in the host's."""
    try:
        with open(id_map, "rb") as fh:
            rows = fh.read().split(b"\n")
    except OSError:
        return True
    for row in rows:
        parts = row.split()
        if len(parts) == 3:
            _inner, outer, count = (int(p) for p in parts)
            if outer <= ident < outer + count:
                return True
    return False
