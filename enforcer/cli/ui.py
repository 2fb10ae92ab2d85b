"""`enforcer ui`: serve the read-only web console over the audit store."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

from enforcer.console.access import check_exposure
from enforcer.store.postgres.dsn import is_postgres
from enforcer.store.schema import StoreError, connect, default_store_path

DEFAULT_ADDR = "127.0.0.1:8765"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "ui", help="serve the read-only web console over the audit store",
        description="Serve the read-only web console (detections, decisions, actions, "
        "dry-run review, counts over time) over the audit store. Binds to loopback by "
        "default; any other address needs a token (--token-file or $ENFORCER_UI_TOKEN).")
    parser.add_argument("--store", default=None,
                        help="store file, or postgresql://USER@HOST/DB for every node's "
                        "records (a role with SELECT is enough; default $ENFORCER_STORE or "
                        "/var/lib/enforcer/audit.db)")
    parser.add_argument("--store-password-file", metavar="FILE",
                        default=os.environ.get("ENFORCER_STORE_PASSWORD_FILE"),
                        help="file holding the PostgreSQL store's password (env "
                        "ENFORCER_STORE_PASSWORD_FILE)")
    parser.add_argument("--addr", default=os.environ.get("ENFORCER_UI_ADDR", DEFAULT_ADDR),
                        help=f"HOST:PORT to listen on (default {DEFAULT_ADDR}; "
                        "$ENFORCER_UI_ADDR)")
    parser.add_argument("--token-file", type=Path, default=None,
                        help="file holding the token browsers must present "
                        "(or set $ENFORCER_UI_TOKEN)")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    parser.set_defaults(func=run)


def split_addr(addr: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 as [::1]:PORT) into its parts; ValueError says what is wrong."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--addr {addr!r}: expected HOST:PORT, e.g. {DEFAULT_ADDR}")
    return host.strip("[]"), int(port)


def _check_postgres(dsn: str, password_file: str | None) -> tuple[int, str]:
    """(exit code, DSN with its password): the store answers and has the schema."""
    from enforcer.store.postgres.dsn import DsnError, redacted, with_password

    try:
        dsn = with_password(dsn, password_file)
        from enforcer.store.postgres.query import ReadPool

        pool = ReadPool(dsn, size=1)
        pool.get().close()
    except DsnError as exc:
        print(f"enforcer ui: {exc}", file=sys.stderr)
        return 2, dsn
    except ImportError as exc:
        print(f"enforcer ui: a postgresql:// store needs psycopg ({exc}); install "
              "enforcer[postgresql]", file=sys.stderr)
        return 3, dsn
    except Exception as exc:  # noqa: BLE001 - psycopg's or the schema's error, said plainly
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"enforcer ui: {redacted(dsn)}: {first}", file=sys.stderr)
        return 3, dsn
    return 0, dsn


def run(args: argparse.Namespace) -> int:
    # Imported here so that other commands do not pay for jinja2.
    from enforcer.console.app import ConsoleApp
    from enforcer.console.server import make_console_server

    try:
        host, port = split_addr(args.addr)
    except ValueError as exc:
        print(f"enforcer ui: {exc}", file=sys.stderr)
        return 2
    token = os.environ.get("ENFORCER_UI_TOKEN") or None
    if args.token_file:
        try:
            token = args.token_file.read_text().strip() or None
        except OSError as exc:
            print(f"enforcer ui: --token-file: {exc}", file=sys.stderr)
            return 2
    try:
        check_exposure(host, token)
    except ValueError as exc:
        print(f"enforcer ui: {exc}", file=sys.stderr)
        return 2
    store = args.store or os.environ.get("ENFORCER_STORE") or default_store_path()
    if is_postgres(store):
        code, store = _check_postgres(store, args.store_password_file)
        if code:
            return code
        app = ConsoleApp(store, token=token)
        store = app.store_path  # shown without its password
    else:
        try:
            connect(Path(store), readonly=True).close()
        except StoreError as exc:
            print(f"enforcer ui: {exc}", file=sys.stderr)
            return 3
        app = ConsoleApp(store, token=token)
    try:
        server = make_console_server(app, host, port, quiet=args.quiet)
    except OSError as exc:
        print(f"enforcer ui: cannot listen on {args.addr}: {exc}", file=sys.stderr)
        return 3
    bound_host, bound_port = server.host, server.port
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"enforcer console on http://{shown}:{bound_port}/ (store {store})", flush=True)
    server.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
