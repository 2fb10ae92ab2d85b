"""`enforcer audit import FILE...`: (re)build the console's audit store from JSONL audit logs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from enforcer.store.importer import import_files
from enforcer.store.retention import DEFAULT_MAX_AGE_S, DEFAULT_MAX_BYTES, Retention
from enforcer.store.schema import StoreError, connect, default_store_path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("audit", help="work with the audit store behind the console",
                            description="Work with the audit store behind `enforcer ui`.")
    audit_sub = parser.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    imp = audit_sub.add_parser(
        "import", help="import JSONL audit logs into the store",
        description="Import JSONL audit logs into the audit store. Lines that are not audit "
        "records are reported as FILE:LINE:COL and skipped; all others are imported. "
        "Importing a log twice adds nothing. Exit 0 when every line was imported, 1 when "
        "some were skipped.")
    imp.add_argument("files", nargs="+", metavar="FILE", help="JSONL audit log(s)")
    imp.add_argument("--store", type=Path, default=None,
                     help="store file (default $ENFORCER_STORE or /var/lib/enforcer/audit.db)")
    imp.add_argument("--max-age-days", type=float, default=DEFAULT_MAX_AGE_S / 86400,
                     help="drop detections older than this (default 30; 0 keeps all)")
    imp.add_argument("--max-size-mb", type=float, default=DEFAULT_MAX_BYTES / 2**20,
                     help="keep the store under this size, oldest first (default 1024; 0: "
                     "no bound)")
    imp.set_defaults(func=_import)
    parser.set_defaults(func=lambda args: (parser.print_help(sys.stderr), 2)[1])


def _import(args: argparse.Namespace) -> int:
    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        for f in missing:
            print(f"enforcer audit import: {f}: no such file", file=sys.stderr)
        return 2
    store = args.store or default_store_path()
    retention = Retention(max_age_s=args.max_age_days * 86400 or None,
                          max_bytes=int(args.max_size_mb * 2**20) or None)
    try:
        conn = connect(store)
    except (StoreError, OSError) as exc:
        print(f"enforcer audit import: {exc}", file=sys.stderr)
        return 3
    try:
        report = import_files(conn, args.files, retention=retention,
                              on_skip=lambda d: print(d, file=sys.stderr))
    except OSError as exc:
        print(f"enforcer audit import: {exc}", file=sys.stderr)
        return 3
    finally:
        conn.close()
    print(f"imported {report.imported} records from {len(args.files)} file(s) into {store}; "
          f"skipped {len(report.skipped)} line(s)")
    return 1 if report.skipped else 0
