"""A container's overlayfs upper (writable) layer on the host: what Falco's
proc.is_exe_upper_layer compares executables against, and what a snapshot takes as the
container's changed files. The Docker API gives the layer (GraphDriver.Data.UpperDir); the
CRI does not, so it is read from the host's mount table, where the runtime mounted the
container's root file system.

Never from the target's own /proc/PID/mountinfo: a process that can make a mount namespace
(user namespaces allowed, no seccomp: the Kubernetes defaults) mounts an overlay whose
`upperdir=` is any string and chroots into it, and that string, opened from the agent's root,
names host files. A process's root is tied to a host mount by what the kernel says of it
(the device and inode of /proc/PID/root), never by a path the process wrote.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator


def overlay_upper_dir(mountinfo: str, at: Callable[[str], bool] = lambda p: p == "/"
                      ) -> str | None:
    """The upper directory of the overlay mount whose mount point satisfies `at` (default:
    the root) in a /proc/PID/mountinfo text; of several, the last one (the one on top)."""
    found = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 10 or "-" not in fields or not at(fields[4]):
            continue
        sep = fields.index("-")
        found = None
        if fields[sep + 1] == "overlay" and len(fields) > sep + 3:
            for option in fields[sep + 3].split(","):
                if option.startswith("upperdir="):
                    found = option[len("upperdir="):]
    return found


def _host_tables(proc_root: str) -> Iterator[tuple[str, str]]:
    """(mount table text, the prefix under which its mount points are reached): the host's
    (PID 1's, through its root), then the agent's own when it shares the host's mounts."""
    for source, prefix in ((f"{proc_root}/1/mountinfo", f"{proc_root}/1/root"),
                           ("/proc/self/mountinfo", "")):
        try:
            with open(source) as fh:
                yield fh.read(), prefix
        except OSError:
            continue


def _unescape(text: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def root_mount_upper(pid: int, proc_root: str = "/proc") -> tuple[bool, str | None]:
    """(whether the process's root is a mount of the host's mount table, the upper layer of
    that mount when it is an overlay).

    The process's root is stat()ed through /proc/PID/root (the kernel's answer); a host mount
    table line matches when its device is that root's and its mount point, stat()ed on the
    host, is that very directory. The upperdir= of such a line was written by whoever mounted
    it in the host's namespace: the container runtime. A root the process mounted itself is
    in no host table: (False, None)."""
    try:
        root = os.stat(f"{proc_root}/{pid}/root")
    except OSError:
        return False, None
    dev = f"{os.major(root.st_dev)}:{os.minor(root.st_dev)}"
    for table, prefix in _host_tables(proc_root):
        for line in table.splitlines():
            fields = line.split()
            if len(fields) < 10 or fields[2] != dev or fields[3] != "/" or "-" not in fields:
                continue
            try:
                point = os.stat(prefix + _unescape(fields[4]))
            except OSError:
                continue
            if (point.st_dev, point.st_ino) != (root.st_dev, root.st_ino):
                continue
            sep = fields.index("-")
            if fields[sep + 1] != "overlay" or len(fields) <= sep + 3:
                return True, None
            for option in fields[sep + 3].split(","):
                if option.startswith("upperdir="):
                    return True, _unescape(option[len("upperdir="):])
            return True, None
    return False, None


def trusted_upper_dir(pid: int, proc_root: str = "/proc") -> str | None:
    """The upper layer of the host overlay mount that is this process's root, or None (gone,
    not an overlay, or a root that no host mount is: one the process mounted itself)."""
    return root_mount_upper(pid, proc_root)[1]


def host_upper_dir(at: Callable[[str], bool], proc_root: str = "/proc") -> str | None:
    """The upper layer of the overlay mounted where `at` says, in the host's mount table (that
    of PID 1, else the agent's own when it shares the host's mounts)."""
    for source in (f"{proc_root}/1/mountinfo", "/proc/self/mountinfo"):
        try:
            with open(source) as fh:
                found = overlay_upper_dir(fh.read(), at)
        except OSError:
            continue
        if found:
            return found
    return None


def open_in_layer(upper: str, path: str) -> int | None:
    """An O_PATH descriptor of `path` (absolute, as the container sees it) inside the layer
    directory `upper`, reached one component at a time without following a symlink, so a
    link in the layer never leads to a host file; None when there is no such entry. The
    caller closes it."""
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        return None
    try:
        current = os.open(upper, os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            flags = os.O_PATH | os.O_NOFOLLOW | (0 if last else os.O_DIRECTORY)
            nxt = os.open(part, flags, dir_fd=current)
            os.close(current)
            current = nxt
    except OSError:
        os.close(current)
        return None
    return current
