"""Benchmark the audit store: import N JSONL records (alerts + the responder's audit records),
then time filtered page queries.

Run:  /work/main/.venv/bin/python tests/bench/bench_store.py [--records 1000000] [--dir DIR]

Prints the import time (target: 1 M records in < 60 s) and, for each filter, the median and
worst time of a newest-first page query over the whole store (target: < 200 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from enforcer.store import query  # noqa: E402
from enforcer.store.importer import import_files  # noqa: E402
from enforcer.store.schema import connect  # noqa: E402

RULES = [("Terminal shell in container", "Notice", 40), ("Read sensitive file untrusted",
         "Warning", 25), ("Drop and execute new binary in container", "Critical", 15),
         ("Contact K8S API Server From Container", "Notice", 12),
         ("Netcat Remote Code Execution in Container", "Warning", 7),
         ("Packet socket created in container", "Notice", 1)]
OUTCOMES = [("done", False, 50), ("dry-run", True, 40), ("rate-limited", False, 6),
            ("guard", False, 3), ("failed", False, 1)]
ACTIONS = ["kill", "delete_pod", "networkpolicy", "snapshot", "quarantine"]


def _pick(rng: random.Random, table):
    return rng.choices(table, weights=[t[-1] for t in table])[0]


def generate(audit: Path, alerts: Path, records: int, seed: int = 7) -> int:
    """Write `records` JSONL lines in the agent's two shapes: per detection one alert (Falco
    JSON, the file output) and the responder's match, decision and 0-2 action records."""
    rng = random.Random(seed)
    t0 = 1_790_000_000 * 10**9
    written = 0
    n = 0
    with open(audit, "w") as out, open(alerts, "w") as out_alerts:
        while written < records:
            n += 1
            rule, prio, _ = _pick(rng, RULES)
            ns = f"ns-{rng.randrange(40)}"
            pod = f"web-{rng.randrange(2000)}"
            t = t0 + n * 250_000_000 + rng.randrange(1000)
            secs, nanos = divmod(t, 10**9)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"
            trace = f"{n:032x}"
            fields = {"proc.name": rng.choice(["bash", "sh", "cat", "nc"]),
                      "proc.pid": rng.randrange(1, 99999), "proc.pname": "runc",
                      "proc.cmdline": f"bash -c id-{n}", "k8s.ns.name": ns,
                      "k8s.pod.name": pod, "container.id": f"{n:012x}",
                      "user.name": "root", "k8s.node.name": f"node-{rng.randrange(20)}"}
            out_alerts.write(json.dumps({
                "hostname": fields["k8s.node.name"], "output": f"{rule} (user=root pod={pod} "
                f"ns={ns} id={n})", "output_fields": fields, "priority": prio, "rule": rule,
                "source": "syscall", "tags": ["container"], "time": stamp,
                "trace_id": trace}) + "\n")
            written += 1
            base = {"match_id": f"{n:016x}", "rule": rule, "priority": prio,
                    "trace_id": trace, "event_time_ns": t, "retries": 0}
            outcome, dry, _ = _pick(rng, OUTCOMES)
            policy = f"policy-{rng.randrange(8)}"
            out.write(json.dumps({**base, "kind": "match", "outcome": "matched",
                                  "start_ns": t + 500_000, "duration_ns": 600_000,
                                  "detail": {"policies": [policy]}}) + "\n")
            written += 1
            verdict = outcome if outcome == "rate-limited" else "act"
            out.write(json.dumps({**base, "kind": "decision", "outcome": verdict,
                                  "policy": policy, "dry_run": dry,
                                  "start_ns": t + 600_000}) + "\n")
            written += 1
            if outcome == "rate-limited":
                continue
            for index, action in enumerate(rng.sample(ACTIONS, rng.choice([1, 2]))):
                result = "suppressed" if outcome == "guard" else outcome
                out.write(json.dumps({**base, "kind": "action", "outcome": result,
                                      "policy": policy, "action": action, "index": index,
                                      "target": {"namespace": ns, "pod": pod},
                                      "render": {"method": "DELETE",
                                                 "path": f"/api/v1/namespaces/{ns}/pods/{pod}"},
                                      "dry_run": dry, "start_ns": t + 700_000,
                                      "duration_ns": rng.randrange(10**5, 10**7)}) + "\n")
                written += 1
    return written


def timed(conn, filters, runs=5):
    spent = []
    for _ in range(runs):
        start = time.perf_counter()
        page = query.list_detections(conn, filters)
        spent.append((time.perf_counter() - start) * 1000)
    return statistics.median(spent), max(spent), len(page.rows), page


def _get(app, path: str) -> str:
    """One GET through the WSGI interface; returns the status line."""
    import io

    path, _, qs = path.partition("?")
    got = {}

    def start_response(status, headers):
        got["status"] = status

    b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": qs,
                  "SCRIPT_NAME": "", "wsgi.input": io.BytesIO()}, start_response))
    return got["status"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="enforcer-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log, alerts, db = work / "audit.jsonl", work / "alerts.jsonl", work / "audit.db"
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        p.unlink(missing_ok=True)
    start = time.perf_counter()
    lines = generate(log, alerts, args.records)
    size = (log.stat().st_size + alerts.stat().st_size) / 1e6
    print(f"generated {lines} JSONL records ({size:.0f} MB) "
          f"in {time.perf_counter() - start:.1f} s")
    load0 = " ".join(f"{x:.1f}" for x in os.getloadavg())
    conn = connect(db)
    start, cpu0 = time.perf_counter(), time.process_time()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = import_files(conn, [alerts, log])
    spent, cpu = time.perf_counter() - start, time.process_time() - cpu0
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    kids = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    dets = conn.execute("SELECT count(*) FROM detections").fetchone()[0]
    resps = conn.execute("SELECT count(*) FROM responses").fetchone()[0]
    print(f"import: {report.imported} records in {spent:.1f} s "
          f"({report.imported / spent:,.0f} records/s); {dets} detections, {resps} responses, "
          f"{db.stat().st_size / 1e6:.0f} MB")
    print(f"import CPU: {cpu:.1f} s in the writing process, {kids:.1f} s in decoding workers; "
          f"load average before: {load0}")
    conn.close()
    conn = connect(db, readonly=True)
    lo, hi = query.time_bounds(conn)
    mid = (lo + hi) // 2
    cases = {
        "no filter": query.Filters(),
        "rule (common)": query.Filters(rule="Terminal shell in container"),
        "rule (rare)": query.Filters(rule="Packet socket created in container"),
        "priority": query.Filters(priority=2),
        "namespace": query.Filters(namespace="ns-3"),
        "pod": query.Filters(pod="web-42"),
        "node": query.Filters(node="node-7"),
        "outcome dry-run": query.Filters(outcome="dry-run"),
        "outcome failed (rare)": query.Filters(outcome="failed"),
        "policy": query.Filters(policy="policy-3"),
        "action": query.Filters(action="quarantine"),
        "rule + outcome failed": query.Filters(rule="Read sensitive file untrusted",
                                               outcome="failed"),
        "rare rule + failed": query.Filters(rule="Packet socket created in container",
                                            outcome="failed"),
        "time range (1 h, middle)": query.Filters(since_ns=mid, until_ns=mid + 3600 * 10**9),
        "time range + ns + outcome": query.Filters(since_ns=mid, until_ns=mid + 86400 * 10**9,
                                                   namespace="ns-5", outcome="guard"),
        "text (common word)": query.Filters(text="bash"),
        "text (one detection)": query.Filters(text="id=123456"),
        "text + rule": query.Filters(text="ns-7", rule="Terminal shell in container"),
        "text (no match) + rule": query.Filters(text="id-123456789",
                                                rule="Terminal shell in container"),
        "text (everywhere) + rare rule": query.Filters(
            text="bash", rule="Packet socket created in container"),
    }
    worst = 0.0
    print(f"{'query':32} {'median ms':>10} {'max ms':>8} {'rows':>5}  driver")
    for name, f in cases.items():
        med, mx, rows, page = timed(conn, f)
        worst = max(worst, mx)
        plan = query._choose_driver(conn, f)
        print(f"{name:32} {med:10.1f} {mx:8.1f} {rows:5}  {plan.kind} {plan.name or ''}")
    # Page 200 deep via the keyset cursor.
    page = query.list_detections(conn, query.Filters(outcome="dry-run"))
    for _ in range(200):
        page = query.list_detections(conn, query.Filters(outcome="dry-run"), before=page.older)
    start = time.perf_counter()
    query.list_detections(conn, query.Filters(outcome="dry-run"), before=page.older)
    print(f"{'page 201 (dry-run, keyset)':32} {(time.perf_counter() - start) * 1000:10.1f}")
    print(f"worst page query: {worst:.1f} ms (target < 200 ms)")
    conn.close()
    # Whole console pages over the same store, through the WSGI app (template included).
    from enforcer.console.app import ConsoleApp

    app = ConsoleApp(db)
    for path in ("/", "/?outcome=failed&rule=Read+sensitive+file+untrusted", "/?q=ns-7",
                 "/detection/1000", "/dry-run", "/stats?by=rule", "/stats?by=outcome"):
        spent = []
        for _ in range(3):
            start = time.perf_counter()
            status = _get(app, path)
            spent.append((time.perf_counter() - start) * 1000)
        print(f"page {path:52} {status[:3]} {statistics.median(spent):8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
