"""Benchmarks of the live agent (root; not collected by pytest). Prints its figures.

    sudo .venv/bin/python tests/bench/bench_ebpf.py throughput   # kernel -> rule decision
    sudo .venv/bin/python tests/bench/bench_ebpf.py overhead     # wall-time ratios

throughput: first the flood of issue 17, a generator failing to open a missing file below
a watched prefix (/etc/sudoers.d/) flat out: no rule can match those failures, so the
kernel drops them (enforcer.kernel.results_filter); reported: opens/s made, events that crossed,
kernel drops. Then a generator opens a path the kernel must pass (a `..` in it) without
matching (the open fails, one `../` is not the traversal rule's two, so no alert is
built); the in-process agent decodes, tracks and evaluates each event (and whatever else
the host does meanwhile). Reported: a 200k-open burst (drops expected), then paced rates
stepped up for 3 s each until the kernel drops; the last rate without drops is the figure.

overhead: runs bench_overhead.py's interleaved overhead benchmark (see there: a tight
open/close loop and a build-like workload without and with `enforcer --dry-run`).
"""

from __future__ import annotations

import os
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
    # watched prefix, open fails, a `..`: the kernel passes it, no rule matches
    target = "/etc/sudoers.d/../sudoers.d/enforcer-bench-missing"
    flood = "/etc/sudoers.d/enforcer-bench-missing"  # failed: no rule can match, dropped

    def run(n: int, rate: int, path: str = target) -> tuple[float, int, int, float]:
        """(events/s decided, events, drops, seconds) for n opens paced at rate/s."""
        base_events, base_drops = agent.events, agent.source.drops()
        t0 = time.monotonic()
        subprocess.run([str(gen), path, str(n), str(rate)], check=True)
        gen_done = time.monotonic()
        last, t_last = agent.events, time.monotonic()
        while time.monotonic() - t_last < 0.3:  # until the agent has caught up
            time.sleep(0.02)
            if agent.events != last:
                last, t_last = agent.events, time.monotonic()
        elapsed = max(t_last, gen_done) - t0
        got = agent.events - base_events
        return got / elapsed, got, agent.source.drops() - base_drops, elapsed

    base_events, base_drops = agent.events, agent.source.drops()
    t0 = time.monotonic()
    subprocess.run([str(gen), flood, "1000000"], check=True)
    secs = time.monotonic() - t0
    time.sleep(0.5)
    print(f"flood: 1000000 failed opens below a watched prefix in {secs:.2f}s "
          f"({1e6 / secs:,.0f}/s); {agent.events - base_events} events crossed (the whole "
          f"host), {agent.source.drops() - base_drops} kernel drops")
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


def overhead() -> None:
    """The interleaved overhead benchmark of bench_overhead.py, with its defaults."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_overhead import overhead as interleaved  # noqa: PLC0415

    interleaved(8, {"open": 3, "build": 8}, 500_000, pin=False)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("throughput", "all"):
        throughput()
    if what in ("overhead", "all"):
        overhead()
