"""The in-kernel open filter's decisions on real opens: what it drops can never be what a
loaded prefix or suffix would match once userspace resolves and normalises the path.
Root; a source loaded with a small filter, a child process doing the opens."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enforcer.sources.ebpf import EbpfSource, available_syscalls, plan
from enforcer.sources.probe import READABLE, WRITABLE, ProbeConfig

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

# Each line: (flags, path) opened from the cwd given on the command line; the last one is
# a sentinel that always passes, so that everything before it has been decided.
CHILD = r"""
import os, sys
os.chdir(sys.argv[1])
for line in sys.argv[2:]:
    mode, path = line.split(" ", 1)
    flags = os.O_RDONLY if mode == "r" else os.O_WRONLY | os.O_CREAT
    try:
        os.close(os.open(path, flags, 0o600))
    except OSError:
        pass
"""

SENTINEL = "/etc/shadow"


def _passed(tmp: Path, opens: list[tuple[str, str]]) -> set[str]:
    """Raw paths (as opened) of the opens the kernel let through."""
    cfg, _ = plan(frozenset({"openat"}), available_syscalls(),
                  ProbeConfig(agent_tgid=os.getpid(),
                              open_prefixes={"/etc/shadow\0": READABLE},
                              open_suffixes={"/cron": WRITABLE, "release_agent": WRITABLE}))
    source = EbpfSource(cfg)
    source.open()
    try:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp),
                                  *(f"{m} {p}" for m, p in opens), f"r {SENTINEL}"])
        seen: set[str] = set()
        deadline = time.monotonic() + 20
        while SENTINEL not in seen and time.monotonic() < deadline:
            for rec in source.poll(50):
                if rec.get("proc.pid") == child.pid and rec.get("evt.type") == "openat":
                    seen.add(rec["_s1"])
        child.wait(10)
    finally:
        source.close()
    assert SENTINEL in seen, "the sentinel open never arrived"
    return seen - {SENTINEL}


def test_relative_and_dotted_paths_are_dropped_only_when_provably_irrelevant(
        ebpf_ready: None, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    must_pass = [
        ("w", "cron"),  # resolves to <cwd>/cron: ends with "/cron"
        ("w", "sub/cron"),
        ("w", "sub/release_agent"),
        ("r", "anything"),  # a relative read may resolve to /etc/shadow
        ("w", "sub/./other"),  # `.` component: normalised by userspace
        ("w", "./other"),
        ("w", "sub/../cron2"),  # any `..`
        ("w", "sub//x"),
        ("w", "sub/"),  # trailing slash
        ("r", "/etc/./shadow"),
        ("r", f"{tmp_path}/.hidden/../../../etc/shadow"),
    ]
    must_drop = [
        ("w", "other"),
        ("w", "sub/crontab"),
        ("w", "xcron"),
        ("r", f"{tmp_path}/.hidden/file"),  # a dot-name is no `.` component
        ("w", f"{tmp_path}/.hidden/cronx"),
    ]
    seen = _passed(tmp_path, must_pass + must_drop)
    assert {p for _, p in must_pass} <= seen
    assert not seen & {p for _, p in must_drop}


def test_paths_outside_every_prefix_are_dropped_unless_a_dotdot_could_lead_inside(
        ebpf_ready: None, tmp_path: Path) -> None:
    """The fast path: an absolute path whose first component starts with a byte no prefix
    has there (here: not `e`), opened for a class no suffix wants (a read). Only a `..`
    can make such a path resolve below a prefix; `.`, `//` and a trailing `/` cannot."""
    must_pass = [
        ("r", "/tmp/../etc/shadow"),
        ("r", "/usr/..x/../../etc/shadow"),
        ("r", "/tmp/.../etc/shadow"),  # `...` is a name, but any `..` passes
        ("r", "/./etc/shadow"),
        ("r", "//etc/shadow"),
        ("r", "/etc//shadow"),  # `e`: judged by the trie, after normalising
        ("r", "/etc/shadow/."),
        ("w", f"{tmp_path}//cron"),  # a class some suffix wants: the full check
        ("w", f"{tmp_path}/./release_agent"),
    ]
    must_drop = [
        ("r", "/tmp//etc/shadow"),
        ("r", "/tmp/./etc/shadow"),
        ("r", "/usr/etc/shadow/"),
        ("r", "/xetc/shadow"),
        ("r", "/.etc/shadow"),  # a name starting with `.`: the full check, which drops it
        ("w", f"{tmp_path}/cronx"),
    ]
    seen = _passed(tmp_path, must_pass + must_drop)
    assert {p for _, p in must_pass} <= seen
    assert not seen & {p for _, p in must_drop}


def _needs_normalising(path: str) -> bool:
    """What userspace's resolve() would change, or a `..` anywhere (the kernel's rule)."""
    return (".." in path or "//" in path or "/./" in path or path.endswith(("/", "/.")))


def _kernel_passes(path: str) -> bool:
    """The reference for reads with the test filter (prefix /etc/shadow, suffixes for
    writes only): a first component starting with `e` is judged after normalising, any
    other only by its `..`."""
    if path[1] == "e":
        return _needs_normalising(path)
    return ".." in path


def test_the_word_wise_path_scans_agree_with_the_reference(ebpf_ready: None,
                                                           tmp_path: Path) -> None:
    import random  # noqa: PLC0415

    rng = random.Random(4)
    paths = {start + "".join(rng.choice("a./") for _ in range(rng.randint(0, 124)))
             for start in ("/a", "/e") for _ in range(300)}
    # every pattern on each side of an 8-byte boundary, for both scans
    for start in ("b", "e"):
        for pad in range(1, 18):
            for pat in ("..", "//", "/./", "/.", "/", "/.a", "/..a", "a.b"):
                paths.add("/" + start * pad + pat)
                paths.add("/" + start * pad + pat + "c" * (17 - pad))
    opens = [("r", p) for p in sorted(paths) if p != SENTINEL]
    seen = _passed(tmp_path, opens)
    wrong = {p for _, p in opens if (p in seen) != _kernel_passes(p)}
    assert not wrong, sorted(wrong)[:10]


def test_the_agents_own_opens_never_leave_the_kernel(ebpf_ready: None) -> None:
    """Opens are judged by path before the kernel is asked whose they are: an open of the
    agent's that the filter passes must still be dropped there, by its process id."""
    cfg, _ = plan(frozenset({"openat"}), available_syscalls(),
                  ProbeConfig(agent_tgid=os.getpid(), open_prefixes={"/etc/shadow\0": READABLE}))
    source = EbpfSource(cfg)
    source.open()
    try:
        for _ in range(3):
            os.close(os.open("/etc/shadow", os.O_RDONLY))  # we are "the agent" here
        child = subprocess.Popen([sys.executable, "-c", CHILD, "/", f"r {SENTINEL}"])
        mine = theirs = 0
        deadline = time.monotonic() + 20
        while not theirs and time.monotonic() < deadline:
            for rec in source.poll(50):
                if rec.get("evt.type") == "openat" and rec.get("_s1") == SENTINEL:
                    mine += rec.get("proc.pid") == os.getpid()
                    theirs += rec.get("proc.pid") == child.pid
        child.wait(10)
    finally:
        source.close()
    assert theirs == 1 and mine == 0
