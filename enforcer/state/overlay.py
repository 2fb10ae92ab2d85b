"""A container's overlayfs upper (writable) layer on the host, from the root mount of one of its
processes: what Falco's proc.is_exe_upper_layer compares executables against. The Docker API
gives the layer (GraphDriver.Data.UpperDir); the CRI does not, so it is read here."""

from __future__ import annotations


def overlay_upper_dir(mountinfo: str) -> str | None:
    """The overlayfs upper directory of the root mount in a /proc/PID/mountinfo text (the
    last mount on / is the one the process sees)."""
    found = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 10 or fields[4] != "/" or "-" not in fields:
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
