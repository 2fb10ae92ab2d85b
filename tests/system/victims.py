"""Processes to respond to, started outside the test's own process tree (the agent never
signals its own descendants), with a launcher that records how each one ended."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from actions.process import read_stat

REPO = Path(__file__).resolve().parents[2]

_LAUNCHER = """
import json, os, subprocess, sys
argv, out = json.loads(sys.argv[1]), sys.argv[2]
child = subprocess.Popen(argv, start_new_session=True)
with open(out + ".pid.tmp", "w") as f:
    f.write(str(child.pid))
os.rename(out + ".pid.tmp", out + ".pid")
code = child.wait()
with open(out + ".tmp", "w") as f:
    f.write(str(code))
os.rename(out + ".tmp", out)
"""

SHADOW_READER = [sys.executable, "-c",
                 'open("/etc/shadow").read(); import time; time.sleep(30)']


def shadow_rules_only_for(rules: Path, condition: str) -> Path:
    """A rules dir `rules` with the shipped Falco rules and "Read sensitive file untrusted"
    narrowed (a Falco `append`) to `condition`, so an agent on this shared machine answers
    only this test's readers."""
    rules.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "policies/rules/falco_rules.yaml", rules / "falco_rules.yaml")
    (rules / "zz_only_this_test.yaml").write_text(
        "- rule: Read sensitive file untrusted\n"
        f"  condition: and {condition}\n"
        "  override: {condition: append}\n")
    return rules


@dataclass
class Victim:
    pid: int
    status_file: Path

    @property
    def start_ticks(self) -> int:
        stat = read_stat(self.pid)
        assert stat is not None, f"victim {self.pid} is gone"
        return stat.start_ticks

    def alive(self) -> bool:
        stat = read_stat(self.pid)
        return stat is not None and stat.state != "Z"

    def exit_code(self, timeout: float = 10.0) -> int:
        """The launcher's view: negative = killed by that signal."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status_file.exists():
                return int(self.status_file.read_text())
            time.sleep(0.01)
        raise AssertionError(f"victim {self.pid} still running after {timeout}s")

    def cleanup(self) -> None:
        if self.alive():
            os.kill(self.pid, 9)


def spawn(argv: list[str], workdir: Path, name: str = "victim",
          ready_state: str = "S") -> Victim:
    """Start `argv` detached (`setsid -f`, so it is not our descendant); wait until it
    sleeps (it has done what it does first)."""
    out = workdir / name
    subprocess.run(["setsid", "-f", sys.executable, "-c", _LAUNCHER, json.dumps(argv),
                    str(out)], check=True)
    pid_file = Path(str(out) + ".pid")
    deadline = time.monotonic() + 10
    while not pid_file.exists():
        if time.monotonic() > deadline:
            raise AssertionError("victim did not start")
        time.sleep(0.005)
    pid = int(pid_file.read_text())
    while True:
        stat = read_stat(pid)
        if stat is None or (stat.state == ready_state and _has_execed(pid, argv)):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"victim {pid} never reached state {ready_state}")
        time.sleep(0.005)
    return Victim(pid=pid, status_file=out)


def _has_execed(pid: int, argv: list[str]) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().split(b"\0")[0].decode() == argv[0]
    except OSError:
        return False
