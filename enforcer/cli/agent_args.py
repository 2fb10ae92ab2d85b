"""The live agent's options beyond detection: HTTP (metrics, probes, console), tracing,
alert outputs, the audit store, hot reload, the falco-http source and the node's identity.

Every option has an environment mirror (listed in AGENT_ENV, which the Helm chart test
compares with what the DaemonSet sets), and the flag wins over the variable.
"""

from __future__ import annotations

import argparse
import os

from enforcer.http_server import DEFAULT_HTTP_ADDR
from enforcer.priority import Priority
from enforcer.sources.falco_http import DEFAULT_ADDR as FALCO_HTTP_ADDR

SOURCES = ("ebpf", "falco-http")

# Every environment variable the live agent reads (besides OTEL_*), for the chart test.
AGENT_ENV = frozenset({
    "ENFORCER_RULES", "ENFORCER_DRY_RUN", "ENFORCER_FORMAT", "ENFORCER_OUTPUT_FILE",
    "ENFORCER_CONTAINER_SOCKET", "ENFORCER_POLICIES", "ENFORCER_AUDIT_LOG",
    "ENFORCER_PROTECTED_NAMESPACES", "ENFORCER_ACTION_BUDGET", "ENFORCER_STATE_DIR",
    "ENFORCER_SNAPSHOT_DIR", "ENFORCER_HTTP_ADDR", "ENFORCER_UI", "ENFORCER_UI_TOKEN",
    "ENFORCER_UI_TOKEN_FILE", "ENFORCER_STORE", "ENFORCER_NODE_NAME", "NODE_NAME",
    "ENFORCER_ENABLED_ACTIONS", "ENFORCER_HOST_PROC", "ENFORCER_KUBERNETES_EVENTS",
    "ENFORCER_WEBHOOK", "ENFORCER_WEBHOOK_HEADERS", "ENFORCER_PROGRAM_OUTPUT",
    "ENFORCER_EXTRA_FIELDS", "ENFORCER_MIN_PRIORITY", "ENFORCER_SOURCE",
    "ENFORCER_FALCO_HTTP_ADDR", "ENFORCER_FALCO_HTTP_TOKEN", "ENFORCER_FALCO_HTTP_TOKEN_FILE",
    "ENFORCER_RELOAD_INTERVAL", "ENFORCER_AUDIT_MAX_BYTES", "POD_NAMESPACE", "POD_NAME",
})


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def _env_flag(name: str) -> bool:
    return (_env(name) or "").lower() in ("1", "true", "yes", "on")


def _env_list(name: str, sep: str = ",") -> list[str]:
    return [v.strip() for v in (_env(name) or "").split(sep) if v.strip()]


def _priority(text: str) -> Priority:
    try:
        return Priority.parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Falco priority (emergency, alert, critical, error, warning, "
            "notice, informational, debug)") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the agent's HTTP, tracing, output, store, reload and source options."""
    g = parser.add_argument_group("agent: HTTP server, console, node")
    g.add_argument("--http-addr", metavar="HOST:PORT",
                   default=_env("ENFORCER_HTTP_ADDR", DEFAULT_HTTP_ADDR),
                   help="serve /metrics, /healthz, /readyz (and /ui with --ui) here; 'off' "
                        f"disables it (env ENFORCER_HTTP_ADDR; default {DEFAULT_HTTP_ADDR})")
    g.add_argument("--ui", action="store_true", default=_env_flag("ENFORCER_UI"),
                   help="serve the read-only web console under /ui on the HTTP server; a "
                        "token is required unless it is bound to loopback (env ENFORCER_UI)")
    g.add_argument("--ui-token-file", metavar="FILE", default=_env("ENFORCER_UI_TOKEN_FILE"),
                   help="file holding the console token (or env ENFORCER_UI_TOKEN)")
    g.add_argument("--store", metavar="PATH", default=_env("ENFORCER_STORE"),
                   help="SQLite audit store the agent writes for the console (env "
                        "ENFORCER_STORE; default: none, or the default store with --ui)")
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
                   help="record responses as Kubernetes Events (env "
                        "ENFORCER_KUBERNETES_EVENTS; accepted, not yet implemented)")
    g.add_argument("--reload-interval", type=float, metavar="SECONDS",
                   default=float(_env("ENFORCER_RELOAD_INTERVAL", "1") or 1),
                   help="how often the rules and policies paths are checked for changes; "
                        "0 disables hot reload (env ENFORCER_RELOAD_INTERVAL; default 1)")
    g.add_argument("--audit-max-bytes", type=int, metavar="N",
                   default=int(_env("ENFORCER_AUDIT_MAX_BYTES", str(100 << 20)) or 0),
                   help="rotate the JSONL audit log past this size (env "
                        "ENFORCER_AUDIT_MAX_BYTES; default 100 MiB)")

    o = parser.add_argument_group("agent: alert outputs")
    o.add_argument("--min-priority", type=_priority, metavar="PRIORITY",
                   default=_priority(_env("ENFORCER_MIN_PRIORITY", "debug") or "debug"),
                   help="stdout and --output-file only print alerts at least this severe "
                        "(env ENFORCER_MIN_PRIORITY; default debug: all)")
    o.add_argument("--webhook", action="append", metavar="URL[,min=PRIORITY]",
                   default=_env_list("ENFORCER_WEBHOOK", " "),
                   help="POST each alert's Falco JSON to URL (Falcosidekick, Talon…); "
                        "',min=warning' sets its own minimum priority (repeatable; env "
                        "ENFORCER_WEBHOOK, space-separated)")
    o.add_argument("--webhook-header", action="append", metavar="'NAME: VALUE'",
                   default=_env_list("ENFORCER_WEBHOOK_HEADERS", "\n"),
                   help="header sent with every webhook request, e.g. 'Authorization: "
                        "Bearer T' (repeatable; env ENFORCER_WEBHOOK_HEADERS, one per line)")
    o.add_argument("--program-output", action="append", metavar="ARGV",
                   default=_env_list("ENFORCER_PROGRAM_OUTPUT", "\n"),
                   help="pipe each alert's JSON to this command's stdin; ARGV is a JSON "
                        "array or shell-like words, never run through a shell (repeatable; "
                        "env ENFORCER_PROGRAM_OUTPUT, one per line)")
    o.add_argument("--program-min-priority", type=_priority, metavar="PRIORITY",
                   default=Priority.DEBUG, help="minimum priority for --program-output")
    o.add_argument("--extra-field", action="append", metavar="KEY=VALUE",
                   default=_env_list("ENFORCER_EXTRA_FIELDS"),
                   help="static field added to every alert's output_fields (repeatable; "
                        "env ENFORCER_EXTRA_FIELDS, comma-separated)")

    t = parser.add_argument_group("agent: OpenTelemetry (standard OTEL_* variables apply)")
    t.add_argument("--otel-endpoint", metavar="URL", default=None,
                   help="OTLP endpoint for the audit traces (else "
                        "OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT)")
    t.add_argument("--otel-protocol", choices=("grpc", "http/protobuf"), default=None,
                   help="OTLP protocol (else OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL, "
                        "default http/protobuf)")

    s = parser.add_argument_group("agent: event source")
    s.add_argument("--source", choices=SOURCES, default=_env("ENFORCER_SOURCE", "ebpf"),
                   help="ebpf: watch this host's kernel; falco-http: answer alerts POSTed "
                        "by Falco's http_output or Falcosidekick (no eBPF) (env "
                        "ENFORCER_SOURCE; default ebpf)")
    s.add_argument("--falco-http-addr", metavar="HOST:PORT",
                   default=_env("ENFORCER_FALCO_HTTP_ADDR", FALCO_HTTP_ADDR),
                   help=f"where --source falco-http listens (default {FALCO_HTTP_ADDR})")
    s.add_argument("--falco-http-token-file", metavar="FILE",
                   default=_env("ENFORCER_FALCO_HTTP_TOKEN_FILE"),
                   help="file holding the shared token Falco must send as 'Authorization: "
                        "Bearer TOKEN' (or env ENFORCER_FALCO_HTTP_TOKEN); required unless "
                        "every response is dry-run")

