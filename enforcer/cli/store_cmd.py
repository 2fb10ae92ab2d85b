"""`enforcer store migrate|prune`: the cluster-wide PostgreSQL store's schema and retention."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "store", help="create, upgrade and prune the cluster-wide PostgreSQL store",
        description="Work with the PostgreSQL store that agents write with --store "
        "postgresql://… and `enforcer ui` reads.")
    store_sub = parser.add_subparsers(dest="store_command", metavar="SUBCOMMAND")
    mig = store_sub.add_parser(
        "migrate", help="apply the schema migrations (agents check the version at start)",
        description="Apply the pending schema migrations, each in its own transaction; "
        "running it again applies nothing. Needs a role that may create tables and "
        "functions; the agents and the console then need only --grant-writer and "
        "--grant-reader rights.")
    _add_store(mig)
    mig.add_argument("--retention-days", type=int, default=None,
                     help="keep this many days of daily partitions; older ones are dropped "
                     "by `enforcer store prune` and by the agents hourly (default 30; 0 keeps "
                     "all)")
    mig.add_argument("--grant-writer", metavar="ROLE",
                     help="grant ROLE what an agent needs (INSERT, UPDATE, partitions)")
    mig.add_argument("--grant-reader", metavar="ROLE",
                     help="grant ROLE what the console needs (SELECT)")
    mig.set_defaults(func=_migrate)
    prune = store_sub.add_parser(
        "prune", help="drop the daily partitions older than the retention",
        description="Drop the daily partitions older than the store's retention_days.")
    _add_store(prune)
    prune.set_defaults(func=_prune)
    parser.set_defaults(func=lambda args: (parser.print_help(sys.stderr), 2)[1])


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=os.environ.get("ENFORCER_STORE"),
                        help="postgresql://USER@HOST:PORT/DB (env ENFORCER_STORE)")
    parser.add_argument("--store-password-file", metavar="FILE",
                        default=os.environ.get("ENFORCER_STORE_PASSWORD_FILE"),
                        help="file holding the database password (env "
                        "ENFORCER_STORE_PASSWORD_FILE)")


def _open(args: argparse.Namespace, what: str):  # noqa: ANN202 - a psycopg connection
    from enforcer.store.postgres.dsn import DsnError, is_postgres, redacted, with_password

    if not is_postgres(args.store):
        print(f"enforcer store {what}: --store must be a postgresql:// URL (the SQLite store "
              "needs no migration)", file=sys.stderr)
        return None, 2
    try:
        dsn = with_password(args.store, args.store_password_file)
    except DsnError as exc:
        print(f"enforcer store {what}: {exc}", file=sys.stderr)
        return None, 2
    import psycopg

    try:
        return psycopg.connect(dsn, connect_timeout=10, autocommit=True), 0
    except psycopg.Error as exc:
        print(f"enforcer store {what}: cannot connect to {redacted(dsn)}: "
              f"{str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return None, 3


def _migrate(args: argparse.Namespace) -> int:
    from enforcer.store.postgres import migrations

    conn, code = _open(args, "migrate")
    if conn is None:
        return code
    import psycopg

    try:
        applied = migrations.migrate(conn, retention_days=args.retention_days,
                                     writer_role=args.grant_writer,
                                     reader_role=args.grant_reader)
    except psycopg.Error as exc:
        print(f"enforcer store migrate: {str(exc).strip()}; run it as a role that may "
              "create tables (the database owner)", file=sys.stderr)
        return 3
    finally:
        conn.close()
    if applied:
        print(f"applied migrations {', '.join(map(str, applied))}; schema version "
              f"{migrations.LATEST}")
    else:
        print(f"schema version {migrations.LATEST}: up to date")
    return 0


def _prune(args: argparse.Namespace) -> int:
    conn, code = _open(args, "prune")
    if conn is None:
        return code
    import psycopg

    from enforcer.store.postgres import migrations

    try:
        migrations.check(conn)
        dropped = conn.execute("SELECT enforcer_prune()").fetchone()[0]
    except (psycopg.Error, migrations.SchemaError) as exc:
        print(f"enforcer store prune: {str(exc).strip()}", file=sys.stderr)
        return 3
    finally:
        conn.close()
    print(f"dropped {dropped} partitions")
    return 0
