"""A snapshot of a directory of many empty files (an attacker's way to make the agent walk
forever): time, peak memory and entries looked at until the walk stops at its bound.

    .venv/bin/python tests/bench/bench_snapshot_walk.py --files 1000000 [--max-files 10000]

The files are made once in a temporary directory (under --dir, default the system's
temporary directory) and removed at the end."""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actions.snapshot import _Collector  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--max-files", type=int, default=10_000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="enforcer-bench-snap-", dir=args.dir))
    try:
        started = time.monotonic()
        tree = base / "tmp"
        tree.mkdir()
        for n in range(args.files):
            os.close(os.open(tree / f"f{n:07d}", os.O_CREAT | os.O_WRONLY, 0o644))
        print(f"made {args.files} empty files in {time.monotonic() - started:.1f}s")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        started = time.monotonic()
        collector = _Collector(max_bytes=50 * 1024**2, max_files=args.max_files, keep=True)
        collector.add_tree(str(tree), None, "rootfs")
        took = time.monotonic() - started
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"walk: {took * 1000:.0f} ms, kept {len(collector.files)} files, looked at "
              f"{collector.entries} entries, truncated={collector.truncated}")
        print(f"python peak allocations during the walk: {peak / 1024**2:.1f} MiB; "
              f"max RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MiB")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
