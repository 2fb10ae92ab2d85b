"""What the two kill benchmarks measure, and how they print it (one definition for both).

A kill's latency is measured from the event's timestamp (the kernel's, on the live agent) to
  - "signal": when pidfd_send_signal returned in the kill action (`signalled_ns` of its
    audit record), and
  - "dead": when the kernel ran the victim's exit (sched:sched_process_exit, stamped by a
    small BPF program here with bpf_ktime_get_ns, the clock the agent's events carry).

Per-stage breakdown, from the responder's audit records of each kill:
  event -> alert       `detection_ms` of the match record (kernel to submit(); 0 in the
                       responder benchmark, which stamps the alert itself)
  alert -> worker      `queue_ms`: the responder's queue and thread hand-off
  worker -> action     match record written, policy decided, decision record written
  action -> signal     plan (pidfd, identity, guards) and pidfd_send_signal
  signal -> dead       the kernel delivers SIGKILL and the victim exits (may be < 0: the
                       victim can exit on another CPU before the system call returns)
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

EXIT_PROGRAM = r"""
BPF_HASH(exits, u32, u64, 65536);
TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (tgid != (u32)id)
        return 0;  /* a thread, not the process */
    u64 now = bpf_ktime_get_ns();
    exits.update(&tgid, &now);
    return 0;
}
"""


class ExitClock:
    """Kernel timestamps (epoch ns) of process exits, from now until close()."""

    def __init__(self) -> None:
        from bcc import BPF  # root and bcc: the benchmarks need both anyway

        self.bpf = BPF(text=EXIT_PROGRAM)
        self.mono_to_wall = time.time_ns() - time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    def exits(self) -> dict[int, int]:
        table = self.bpf["exits"]
        return {k.value: v.value + self.mono_to_wall for k, v in table.items()}

    def forget(self, pid: int) -> None:
        try:
            del self.bpf["exits"][ctypes.c_uint(pid)]
        except KeyError:
            pass

    def close(self) -> None:
        self.bpf.cleanup()


@dataclass
class Kill:
    pid: int
    event_ns: int
    detection_ms: float
    queue_ms: float
    action_start_ns: int
    signalled_ns: int
    dead_ns: int | None

    @property
    def signal_ms(self) -> float:
        return (self.signalled_ns - self.event_ns) / 1e6

    @property
    def dead_ms(self) -> float | None:
        return None if self.dead_ns is None else (self.dead_ns - self.event_ns) / 1e6

    def stages(self) -> dict[str, float | None]:
        alert_to_worker = self.detection_ms + self.queue_ms
        worker_ns = self.event_ns + alert_to_worker * 1e6
        return {"event -> alert": self.detection_ms,
                "alert -> worker": self.queue_ms,
                "worker -> action": (self.action_start_ns - worker_ns) / 1e6,
                "action -> signal": (self.signalled_ns - self.action_start_ns) / 1e6,
                "signal -> dead": (None if self.dead_ns is None
                                   else (self.dead_ns - self.signalled_ns) / 1e6)}


def kills_from_audit(records: Iterable[dict[str, Any]], exits: dict[int, int],
                     wanted: Any = None) -> list[Kill]:
    """One Kill per `done` kill action record (`wanted(action_record)` filters)."""
    records = list(records)
    matches = {r["match_id"]: r for r in records if r.get("kind") == "match"}
    kills = []
    for rec in records:
        detail = rec.get("detail") or {}
        if rec.get("kind") != "action" or rec.get("action") != "kill" \
                or rec.get("outcome") != "done" or "signalled_ns" not in detail:
            continue
        if wanted is not None and not wanted(rec):
            continue
        match = (matches.get(rec["match_id"]) or {}).get("detail") or {}
        pid = rec["target"]["pid"]
        kills.append(Kill(pid=pid, event_ns=rec["event_time_ns"],
                          detection_ms=match.get("detection_ms", 0.0),
                          queue_ms=match.get("queue_ms", 0.0),
                          action_start_ns=rec["start_ns"],
                          signalled_ns=detail["signalled_ns"], dead_ns=exits.get(pid)))
    return kills


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile (q in 0..1): p99 of 200 values is the 198th smallest."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


def line(name: str, values: list[float]) -> str:
    if not values:
        return f"  {name:<18} (none)"
    return (f"  {name:<18} p50 {quantile(values, .5):8.3f}  p90 {quantile(values, .9):8.3f}  "
            f"p99 {quantile(values, .99):8.3f}  max {max(values):8.3f} ms")


def report(title: str, kills: list[Kill], target_p99_ms: float = 5.0) -> str:
    """The figures, as printed by both benchmarks."""
    signal = [k.signal_ms for k in kills]
    dead = [k.dead_ms for k in kills if k.dead_ms is not None]
    out = [f"{title}: {len(kills)} kills, load average "
           + " ".join(f"{x:.2f}" for x in os.getloadavg())]
    out.append(line("event -> signal", signal))
    out.append(line("event -> dead", dead) + f"  ({len(dead)} exits seen)")
    out.append(" per stage:")
    for stage in kills[0].stages() if kills else ():
        values = [v for k in kills if (v := k.stages()[stage]) is not None]
        out.append(line(stage, values))
    if signal:
        p99 = quantile(signal, .99)
        out.append(f" target p99 (event -> signal) <= {target_p99_ms:g} ms: "
                   f"{'met' if p99 <= target_p99_ms else 'NOT met'} ({p99:.3f} ms)")
    return "\n".join(out)
