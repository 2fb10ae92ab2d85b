"""A container's overlayfs upper (writable) layer on the host: what Falco's
proc.is_exe_upper_layer compares executables against. The Docker API gives the layer
(GraphDriver.Data.UpperDir); the CRI does not, so it is read from mount tables: the host's,
where the runtime mounted the container's root file system before starting it, or the root
mount of one of the container's processes."""

from __future__ import annotations

from collections.abc import Callable


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


def upper_dir_of(pid: int, proc_root: str = "/proc") -> tuple[bool, str | None]:
    """(whether /proc/PID/mountinfo could be read, the upper layer of its root mount)."""
    try:
        with open(f"{proc_root}/{pid}/mountinfo") as fh:
            return True, overlay_upper_dir(fh.read())
    except OSError:
        return False, None


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
