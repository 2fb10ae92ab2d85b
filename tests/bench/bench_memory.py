"""Benchmark: the live agent's resident memory (root; not collected by pytest). Prints RSS.

    sudo .venv/bin/python tests/bench/bench_memory.py [--procs 10000] [--imports]

Starts `enforcer --dry-run` as a child (its audit log, state and snapshot dirs in a temp
dir, no HTTP port) and reads VmRSS from /proc once it is ready:
1. the bundled rules (the stable file), right after ready;
2. all three upstream files (stable, incubating, sandbox), after ready, then again once
   --procs sleeping processes of this benchmark's own have been started and the agent
   has seen their exec events (default 10 000; they are killed at the end).
With --imports the agent runs with PYTHONPROFILEIMPORTTIME and the heaviest top-level
packages it imported are listed (what start-up pulled in that a bare agent may not need).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = REPO / "tests" / "data" / "falco-rules"
MARKER = "enforcer-bench-mem"

# A parent that forks N children, each exec'ing this same binary as a sleeper (so every
# one is an exec the agent tracks, with its own cmdline), then waits to be killed.
SPAWNER = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "sleep") == 0) { for (;;) pause(); }
    long n = atol(argv[1]);
    char idx[32];
    for (long i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) {
            snprintf(idx, sizeof idx, "%ld", i);
            execl("/proc/self/exe", "MARKER", "sleep", idx, (char *)0);
            _exit(1);
        }
        if (p < 0) { perror("fork"); return 1; }
    }
    printf("spawned %ld\n", n);
    fflush(stdout);
    for (;;) pause();
}
""".replace("MARKER", MARKER)


def rss_mb(pid: int) -> float:
    """VmRSS of a process, in MB (MiB)."""
    text = Path(f"/proc/{pid}/status").read_text()
    kb = int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1))  # type: ignore[union-attr]
    return kb / 1024


class Agent:
    """`enforcer --dry-run` as a child process, in its own temp dir."""

    def __init__(self, rules: list[Path], work: Path, imports: bool = False):
        self.err = (work / "agent.err").open("w+")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ENFORCER_"))}
        env["PYTHONPATH"] = str(REPO)
        if imports:
            env["PYTHONPROFILEIMPORTTIME"] = "1"
        argv = [sys.executable, "-m", "enforcer", "--dry-run",
                "--audit-log", str(work / "audit.jsonl"), "--state-dir", str(work / "state"),
                "--snapshot-dir", str(work / "snapshots"), "--reload-interval", "0",
                "--http-addr", "127.0.0.1:0"]
        if rules:
            argv += ["--rules", *map(str, rules)]
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.err,
                                     stdin=subprocess.DEVNULL, env=env)
        while "enforcer: ready:" not in self.stderr():
            if self.proc.poll() is not None:
                raise SystemExit(f"the agent exited {self.proc.returncode}:\n{self.stderr()}")
            if time.monotonic() - self.t0 > 300:
                self.stop()
                raise SystemExit(f"the agent never became ready:\n{self.stderr()}")
            time.sleep(0.1)
        self.ready_s = time.monotonic() - self.t0

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def rss(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def settle(agent: Agent, seconds: float = 3.0) -> float:
    """RSS once it has not grown for `seconds` (the agent digests a burst of events)."""
    last, since = agent.rss(), time.monotonic()
    while time.monotonic() - since < seconds:
        time.sleep(0.25)
        now = agent.rss()
        if now > last + 0.5:
            last, since = now, time.monotonic()
    return agent.rss()


def heaviest_imports(stderr: str, top: int = 12) -> list[tuple[str, float]]:
    """Cumulative import time per top-level package (a proxy for what start-up loaded)."""
    per: Counter[str] = Counter()
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m:  # cumulative figures: count each package at its outermost import only
            name = m.group(3)
            top_level = name.split(".")[0]
            if top_level != "enforcer" and top_level != "actions" and name == top_level:
                per[top_level] = max(per[top_level], int(m.group(1)) / 1e6)
    return per.most_common(top)


def spawn(n: int, work: Path) -> subprocess.Popen[str]:
    src = work / "spawner.c"
    src.write_text(SPAWNER)
    exe = work / "spawner"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    proc = subprocess.Popen([str(exe), str(n)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("spawned"):
        os.killpg(proc.pid, signal.SIGKILL)
        raise SystemExit(f"the spawner failed: {line!r}")
    return proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=10_000)
    ap.add_argument("--imports", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="enforcer-bench-mem-") as tmp:
        work = Path(tmp)
        (work / "a").mkdir()
        agent = Agent([], work / "a", imports=args.imports)
        try:
            print(f"stable rules (bundled): RSS after ready {agent.rss():.1f} MB "
                  f"(ready in {agent.ready_s:.1f}s); settled {settle(agent):.1f} MB")
            if args.imports:
                for name, secs in heaviest_imports(agent.stderr()):
                    print(f"    import {name}: {secs:.2f}s")
        finally:
            agent.stop()
        (work / "b").mkdir()
        files = [UPSTREAM / "falco_rules.yaml", UPSTREAM / "falco-incubating_rules.yaml",
                 UPSTREAM / "falco-sandbox_rules.yaml"]
        agent = Agent(files, work / "b")
        spawner = None
        try:
            print(f"three upstream files: RSS after ready {agent.rss():.1f} MB "
                  f"(ready in {agent.ready_s:.1f}s)")
            if args.procs:
                spawner = spawn(args.procs, work)
                print(f"three upstream files + {args.procs} tracked processes: "
                      f"RSS {settle(agent, 5.0):.1f} MB")
        finally:
            if spawner is not None:
                os.killpg(spawner.pid, signal.SIGKILL)
                spawner.wait()
            agent.stop()


if __name__ == "__main__":
    main()
