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


def _needs_normalising(path: str) -> bool:
    """What userspace's resolve() would change, or a `..` anywhere (the kernel's rule)."""
    return (".." in path or "//" in path or "/./" in path or path.endswith(("/", "/.")))


def test_the_word_wise_path_scan_agrees_with_the_reference(ebpf_ready: None,
                                                           tmp_path: Path) -> None:
    import random  # noqa: PLC0415

    rng = random.Random(4)
    paths = {"/a" + "".join(rng.choice("a./") for _ in range(rng.randint(0, 124)))
             for _ in range(400)}
    # every pattern on each side of an 8-byte boundary
    for pad in range(1, 18):
        for pat in ("..", "//", "/./", "/.", "/", "/.a", "/..a", "a.b"):
            paths.add("/" + "b" * pad + pat)
            paths.add("/" + "b" * pad + pat + "c" * (17 - pad))
    opens = [("r", p) for p in sorted(paths) if p != SENTINEL]
    seen = _passed(tmp_path, opens)
    wrong = {p for _, p in opens if (p in seen) != _needs_normalising(p)}
    assert not wrong, sorted(wrong)[:10]
