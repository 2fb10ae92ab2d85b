"""Benchmarks of the live agent (root; not collected by pytest). Prints its figures.

    sudo .venv/bin/python tests/bench/bench_ebpf.py throughput   # kernel -> rule decision
    sudo .venv/bin/python tests/bench/bench_ebpf.py overhead     # wall-time ratios

throughput: a generator process opens a path the stable rules watch (so the kernel
passes every open) without matching (the open fails, so no alert is built); the in-process
agent decodes, tracks and evaluates each event (and whatever else the host does meanwhile).
Reported: a 200k-open burst (drops expected), then paced rates stepped up for 3 s each
until the kernel drops; the last rate without drops is the figure.

overhead: wall time of (a) a tight open/close loop in C and (b) a build-like workload
(tar extract + find + gcc of a small C file), each without and with `enforcer --dry-run`
(bundled rules) running; median of several runs; ratio with/without.
"""

from __future__ import annotations

import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

GEN = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[2]);
    long rate = argc > 3 ? atol(argv[3]) : 0;   /* opens per second, 0 = flat out */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        int fd = open(argv[1], O_RDONLY);
        if (fd >= 0) close(fd);
        if (rate && (i % 256) == 0) {
            for (;;) {
                clock_gettime(CLOCK_MONOTONIC, &now);
                double el = (now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9;
                if (el * rate >= i) break;
                usleep(200);
            }
        }
    }
    return 0;
}
"""

SMALL_C = r"""
#include <stdio.h>
static int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
int main(void) { printf("%d\n", fib(20)); return 0; }
"""


def _compile(src: str, out: Path) -> None:
    c = out.with_suffix(".c")
    c.write_text(src)
    subprocess.run(["gcc", "-O2", "-o", str(out), str(c)], check=True)


def throughput() -> None:
    from enforcer.agent import Agent
    from enforcer.resources import default_rules_dir
    from enforcer.rules.engine import Engine
    from enforcer.rules.loader import load_rules

    work = Path(tempfile.mkdtemp(prefix="enforcer-bench-"))
    gen = work / "gen"
    _compile(GEN, gen)
    engine = Engine(load_rules([str(default_rules_dir())]))
    agent = Agent(engine, rules=engine.rules, stderr=open(os.devnull, "w"))  # noqa: SIM115
    agent.open()
    stop = threading.Event()
    t = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    t.start()
    agent.started.wait()
    target = "/etc/sudoers.d/enforcer-bench-missing"  # watched prefix, open fails: no alert

    def run(n: int, rate: int) -> tuple[float, int, int, float]:
        """(events/s decided, events, drops, seconds) for n opens paced at rate/s."""
        base_events, base_drops = agent.events, agent.source.drops()
        t0 = time.monotonic()
        subprocess.run([str(gen), target, str(n), str(rate)], check=True)
        gen_done = time.monotonic()
        last, t_last = agent.events, time.monotonic()
        while time.monotonic() - t_last < 0.3:  # until the agent has caught up
            time.sleep(0.02)
            if agent.events != last:
                last, t_last = agent.events, time.monotonic()
        elapsed = max(t_last, gen_done) - t0
        got = agent.events - base_events
        return got / elapsed, got, agent.source.drops() - base_drops, elapsed

    rate, got, drops, secs = run(200_000, 0)
    print(f"burst: 200000 opens in {secs:.2f}s, {got} events decided "
          f"({rate:,.0f}/s), {drops} kernel drops")
    best = None
    for paced in (5_000, 10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000):
        r2, got2, drops2, secs2 = run(paced * 3, paced)
        print(f"paced {paced:,} opens/s for 3s: {got2} events decided in {secs2:.2f}s "
              f"({r2:,.0f}/s), {drops2} drops")
        if drops2:
            break
        best = r2
    if best:
        print(f"kernel -> rule decision with 0 drops: {best:,.0f} events/s")
    stop.set()
    t.join(30)
    agent.close()


def _timed(cmd: list[str] | str, shell: bool = False) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the workload and its children) of one run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, shell=shell, stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"workload failed: {cmd}")
    # wait4 on the shell gives its own usage; the children's is in RUSAGE_CHILDREN
    return wall, ru.ru_utime + ru.ru_stime


def _series(cmd: list[str] | str, runs: int, shell: bool = False) -> tuple[float, float]:
    """(median wall, median CPU) over runs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    walls = []
    for _ in range(runs):
        walls.append(_timed(cmd, shell)[0])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)) / runs
    return statistics.median(walls), cpu


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def overhead() -> None:
    work = Path(tempfile.mkdtemp(prefix="enforcer-bench-"))
    loop = work / "openloop"
    _compile(GEN, loop)
    target = work / "file"
    target.write_text("x")
    small = work / "small.c"
    small.write_text(SMALL_C)
    tarball = work / "src.tar"
    subprocess.run(["tar", "-C", "/usr/include", "-cf", str(tarball), "linux", "asm-generic"],
                   check=True)
    build = (f"rm -rf {work}/x && mkdir {work}/x && tar -C {work}/x -xf {tarball} && "
             f"find {work}/x -type f -name '*.h' | wc -l && "
             f"gcc -O2 -o {work}/x/small {small} && {work}/x/small")
    n_open = 1_000_000
    runs = 7

    def measure() -> dict[str, tuple[float, float]]:
        return {"open": _series([str(loop), str(target), str(n_open)], runs),
                "build": _series(build, runs, shell=True)}

    without1 = measure()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    agent = subprocess.Popen([sys.executable, "-m", "enforcer", "--dry-run"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in agent.stderr:  # type: ignore[union-attr]
        if "enforcer: ready" in line:
            print(line.strip())
            break
    cpu0, t0 = _proc_cpu(agent.pid), time.monotonic()
    with_agent = measure()
    agent_cpu, span = _proc_cpu(agent.pid) - cpu0, time.monotonic() - t0
    agent.send_signal(signal.SIGINT)
    summary = agent.communicate(timeout=300)[1]
    without2 = measure()
    for key, label in (("open", f"open/close loop ({n_open} opens)"),
                       ("build", "build-like (tar x + find + gcc)")):
        base_wall = min(without1[key][0], without2[key][0])
        base_cpu = min(without1[key][1], without2[key][1])
        wall, cpu = with_agent[key]
        print(f"{label}, median of {runs}: wall without {without1[key][0]:.3f}s/"
              f"{without2[key][0]:.3f}s, with {wall:.3f}s -> {wall / base_wall:.3f}x; "
              f"workload CPU without {base_cpu:.3f}s, with {cpu:.3f}s -> {cpu / base_cpu:.3f}x")
    print(f"agent CPU while measuring: {agent_cpu:.2f}s over {span:.1f}s "
          f"({100 * agent_cpu / span:.0f}% of one core; it also sees the rest of the host)")
    drop_line = [x for x in summary.splitlines() if "event drop detected" in x]
    print("agent:", drop_line[0].strip() if drop_line else summary[-300:])


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("throughput", "all"):
        throughput()
    if what in ("overhead", "all"):
        overhead()
