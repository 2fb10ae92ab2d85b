"""The live agent's deployment options: the console and its store, hot reload, and what
the DaemonSet tells the agent about its node (name, allowed actions, host /proc).

Outputs, metrics, tracing and the falco-http input have theirs in enforcer.cli.observe_args,
responses in enforcer.respond.options. Every option has an environment mirror.
"""

from __future__ import annotations

import argparse
import os

from enforcer.units import duration_or_zero_argument


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def _env_flag(name: str) -> bool:
    return (_env(name) or "").lower() in ("1", "true", "yes", "on")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the console, store, reload and node options."""
    g = parser.add_argument_group("console, store, hot reload, node")
    g.add_argument("--ui", action="store_true", default=_env_flag("ENFORCER_UI"),
                   help="serve the read-only web console under /ui on the HTTP server; a "
                        "token is required unless it is bound to loopback (env ENFORCER_UI)")
    g.add_argument("--ui-token-file", metavar="FILE", default=_env("ENFORCER_UI_TOKEN_FILE"),
                   help="file holding the console token (or env ENFORCER_UI_TOKEN)")
    g.add_argument("--store", metavar="PATH|URL", default=_env("ENFORCER_STORE"),
                   help="audit store the agent writes for the console: an SQLite file, or "
                        "postgresql://USER@HOST/DB for one store of every node (env "
                        "ENFORCER_STORE; default: none, or the default store with --ui)")
    g.add_argument("--store-password-file", metavar="FILE",
                   default=_env("ENFORCER_STORE_PASSWORD_FILE"),
                   help="file holding the PostgreSQL store's password, e.g. a mounted "
                        "Secret (env ENFORCER_STORE_PASSWORD_FILE)")
    g.add_argument("--store-spool", metavar="PATH",
                   default=_env("ENFORCER_STORE_SPOOL", "/var/lib/enforcer/store-spool.db"),
                   help="where records wait while the PostgreSQL store is down, replayed in "
                        "order when it is back (env ENFORCER_STORE_SPOOL; default "
                        "/var/lib/enforcer/store-spool.db)")
    g.add_argument("--node-name", metavar="NAME",
                   default=_env("ENFORCER_NODE_NAME") or _env("NODE_NAME"),
                   help="this node's Kubernetes name: actions only touch pods scheduled "
                        "here (env NODE_NAME, as the chart sets it from the downward API)")
    g.add_argument("--enabled-actions", metavar="A,B", default=None,
                   help="actions this deployment allows (comma-separated); a policy using "
                        "another is refused at load (env ENFORCER_ENABLED_ACTIONS; "
                        "default: all)")
    g.add_argument("--host-proc", metavar="DIR", default=_env("ENFORCER_HOST_PROC", "/proc"),
                   help="the host's /proc (env ENFORCER_HOST_PROC; default /proc)")
    g.add_argument("--kubernetes-events", choices=("true", "false"),
                   default=(_env("ENFORCER_KUBERNETES_EVENTS") or "false").lower(),
                   help="record each response outcome on a pod (done, dry-run, failed, "
                        "suppressed) as a Kubernetes Event on that pod; needs RBAC events "
                        "create (env ENFORCER_KUBERNETES_EVENTS; default false)")
    g.add_argument("--reload-interval", type=duration_or_zero_argument, metavar="DURATION",
                   default=duration_or_zero_argument(_env("ENFORCER_RELOAD_INTERVAL", "1") or "1"),
                   help="how often the rules and policies paths are checked for changes; "
                        "0 disables hot reload (env ENFORCER_RELOAD_INTERVAL; default 1)")
