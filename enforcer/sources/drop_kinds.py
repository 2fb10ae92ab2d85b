"""Falco's kinds of dropped events (`n_drops_buffer_<kind>_exit`, and the `drop` label of
falcosecurity_scap_n_drops_buffer_total): the event types Falco's drivers count under each
(libs' compute_event_types_stats), as our event types. Event types of no kind (socket, bind,
setuid...) count in the totals only, as in Falco."""

from __future__ import annotations

from collections.abc import Mapping

KIND_OF_EVENT: dict[str, str] = {
    **dict.fromkeys(("open", "openat", "openat2", "creat"), "open"),
    **dict.fromkeys(("execve", "execveat"), "execve"),
    "connect": "connect",
    "fork": "clone_fork",
    "procexit": "proc",
    **dict.fromkeys(("dup", "dup2", "dup3", "chmod", "fchmod", "fchmodat", "link", "linkat",
                     "mkdir", "mkdirat", "mount", "umount2", "rename", "renameat",
                     "renameat2", "rmdir", "symlink", "symlinkat", "unlink", "unlinkat"),
                    "dir_file"),
    **dict.fromkeys(("bpf", "ptrace", "setns", "setresgid", "setresuid", "unshare"),
                    "other_interest"),
}
EXIT_KINDS = ("clone_fork", "execve", "connect", "open", "dir_file", "other_interest", "close",
              "proc")
# Falco 0.44 exports these with dir="enter" at 0 (deprecated), for its dashboards.
ENTER_KINDS = ("clone_fork", "execve", "connect", "open", "dir_file", "other_interest")


def by_kind(by_event: Mapping[str, int]) -> dict[str, int]:
    """Drops by Falco's exit kind (every kind present, 0 when none)."""
    kinds = dict.fromkeys(EXIT_KINDS, 0)
    for event, count in by_event.items():
        kind = KIND_OF_EVENT.get(event)
        if kind is not None:
            kinds[kind] += count
    return kinds
