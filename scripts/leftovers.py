"""What the test suite left behind on the host: processes, mounts, network namespaces, podman
containers and files of its own that outlived it.

    python3 scripts/leftovers.py snapshot STATE MARK RUNDIR   # before the suite
    python3 scripts/leftovers.py check STATE                  # after it: exit 1 if any

scripts/test.sh runs the suite with SUITE_RUN_MARK=MARK and TMPDIR=RUNDIR (so pytest's temp
dirs and every tempfile of the tests live there), and removes RUNDIR afterwards.

Only what is provably this run's is reported, so that a machine shared with other work (a
real agent, other test runs) gives no false alarm: a process started during the run that
carries the mark in its environment (every test's child inherits it) or names RUNDIR on its
command line; a podman container labelled with the mark (tests/system/conftest.py labels
every container it runs); a network namespace or mount point whose name carries the mark
(tests/system/netns_pod.py) or lies under RUNDIR; and a new file or directory under /tmp,
/var/tmp, /dev/shm, /var/log, /var/lib or /run (and the agent's default directories there)
named as the tests name what they make outside their temp dirs (OUR_PATHS). Stdlib only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

# What the tests (or an agent they start) could make outside their temp dirs: copies in
# /dev/shm (test_agent_rules.py), scratch dirs and logs, an agent's default directories.
# Anything else of the run's under these roots carries the mark in its name. Plain
# "enforcer-*" names in /tmp are not claimed: another run on the machine (one that does not
# go through scripts/test.sh) makes them with its own tempfiles.
OUR_PATHS = ("/dev/shm/enforcer", "/var/tmp/enforcer", "/var/log/enforcer",
             "/var/lib/enforcer", "/run/enforcer")
FILE_ROOTS = ("/tmp", "/var/tmp", "/dev/shm", "/var/log", "/var/lib", "/run")
GRACE_S = 15.0  # processes and veths being torn down as the suite ends


def _processes() -> dict[str, dict[str, str]]:
    """pid -> {start, cmdline, environ-mark} for every process /proc shows."""
    found: dict[str, dict[str, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            start = stat.rsplit(")", 1)[1].split()[19]
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except (OSError, IndexError):
            continue
        mark = next((v.split(b"=", 1)[1].decode(errors="replace")
                     for v in environ.split(b"\0") if v.startswith(b"SUITE_RUN_MARK=")), "")
        found[entry] = {"start": start, "cmdline": cmdline.decode(errors="replace").strip(),
                        "mark": mark}
    return found


def _mounts() -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def _netns() -> list[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _containers(mark: str) -> list[str]:
    try:
        done = subprocess.run(["podman", "ps", "-a", "--filter",
                               f"label=enforcer.test.run={mark}", "--format", "{{.Names}}"],
                              capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return done.stdout.split()


def _files() -> list[str]:
    names = []
    for root in FILE_ROOTS:
        try:
            names += [str(Path(root) / n) for n in os.listdir(root)]
        except OSError:
            continue
    for parent in ("/var/log/enforcer", "/var/lib/enforcer", "/run/enforcer"):
        try:
            names += [str(Path(parent) / n) for n in os.listdir(parent)]
        except OSError:
            continue
    return names


def _ours(name: str, mark: str) -> bool:
    return name.startswith(OUR_PATHS) or mark in name


def snapshot(state: Path, mark: str, rundir: str) -> None:
    state.write_text(json.dumps({
        "mark": mark, "rundir": rundir,
        "processes": {pid: p["start"] for pid, p in _processes().items()},
        "mounts": _mounts(), "netns": _netns(), "files": _files()}))


def leftovers(state: dict) -> list[str]:
    mark, rundir = state["mark"], state["rundir"]
    mine = {str(os.getpid()), str(os.getppid())}
    found = []
    for pid, proc in _processes().items():
        if pid in mine or state["processes"].get(pid) == proc["start"]:
            continue
        if proc["mark"] == mark or rundir in proc["cmdline"]:
            found.append(f"process {pid}: {proc['cmdline'][:200]}")
    before = set(state["mounts"])
    found += [f"mount {m}" for m in _mounts()
              if m not in before and (mark in m or m.startswith(rundir))]
    before = set(state["netns"])
    found += [f"network namespace {n}" for n in _netns() if n not in before and mark in n]
    found += [f"podman container {c}" for c in _containers(mark)]
    before = set(state["files"])
    found += [f"file {f}" for f in _files()
              if f not in before and _ours(f, mark) and not f.startswith(rundir)]
    return found


def check(state_path: Path) -> int:
    state = json.loads(state_path.read_text())
    deadline = time.monotonic() + GRACE_S
    while (found := leftovers(state)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not found:
        print("leftovers: the suite left nothing of its own behind")
        return 0
    print(f"leftovers: the suite left {len(found)} thing(s) of its own behind; the test that "
          "made each must remove it:", file=sys.stderr)
    for item in found:
        print(f"  {item}", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "snapshot":
        snapshot(Path(argv[1]), argv[2], argv[3])
        return 0
    if len(argv) == 2 and argv[0] == "check":
        return check(Path(argv[1]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
