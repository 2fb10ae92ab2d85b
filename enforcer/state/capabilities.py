"""Linux capability sets as Falco renders them (`thread.cap_effective` and friends).

Falco prints a set as the names of its raised bits in bit order, `CAP_`-prefixed and
separated by single spaces (`CAP_CHOWN CAP_DAC_OVERRIDE ...`), and the empty set as an
empty string. The kernel numbers capabilities; the names below are its own
(include/uapi/linux/capability.h), in that order.
"""

from __future__ import annotations

CAP_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
CAP = {name: bit for bit, name in enumerate(CAP_NAMES)}

_rendered: dict[int, str] = {}  # the same few sets recur (host root, podman's default...)


def cap_names(mask: int) -> str:
    """The set `mask` (a bit per capability) as Falco prints it; bits the kernel has added
    since CAP_CHECKPOINT_RESTORE have no name here and are left out, as Falco does."""
    text = _rendered.get(mask)
    if text is None:
        text = " ".join(name for bit, name in enumerate(CAP_NAMES) if mask >> bit & 1)
        if len(_rendered) < 1024:
            _rendered[mask] = text
    return text


def has_cap(mask: int, name: str) -> bool:
    """Whether capability `name` (e.g. "CAP_SYS_ADMIN") is raised in `mask`."""
    return bool(mask >> CAP[name] & 1)
