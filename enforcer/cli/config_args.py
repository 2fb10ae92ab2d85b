"""`enforcer --config FILE` (or ENFORCER_CONFIG): the live agent's settings from a YAML
file, between the command line and the environment:

    command-line flag > config file > ENFORCER_* variables > OTEL_* variables > defaults

The flags read their ENFORCER_* variables as their defaults when the parser is built; the
config file's settings then replace those defaults (`parser.set_defaults`) and the command
line is parsed again, so a flag given on the command line still wins. A list or mapping
given by a flag adds to the config file's (extra fields, headers and protected namespaces
merge; on the same key the flag wins), except the webhook: `--webhook-url` replaces the
config file's `outputs.webhooks`. Tracing settings the file leaves out are left to the
OTEL_* variables, exactly as the OpenTelemetry SDK reads them.

The file is read once, at start: changing it needs a restart (it is not hot reloaded)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from enforcer.errors import ConfigError, Diagnostic, RuleError
from enforcer.priority import Priority
from enforcer.units import parse_duration, parse_size

# Settings only the config file can give: their defaults, for the parser.
CONFIG_ONLY_DEFAULTS: dict[str, Any] = {
    "webhooks": None,          # [{url, headers, timeout, retries, min_priority, ca_file}]
    "stdout_enabled": True,
    "json_output": False,      # falco.yaml's json_output (-L and -l print JSON with it)
    "alert_shape": None,       # falco.yaml's json_include_* and time_format_iso_8601
    "append_output_entries": None,  # falco.yaml's append_output, parsed
    "http_tls_pem": None,      # falco.yaml's webserver.ssl_certificate when ssl_enabled
    "health_path": None,       # falco.yaml's webserver.k8s_healthz_endpoint (besides /healthz)
    "ringbuf_pages": None,     # falco.yaml's engine block (None: ProbeConfig's 16 MiB)
    "drop_actions": ("log",),  # falco.yaml's syscall_event_drops
    "drop_rate": 0.03333,
    "drop_max_burst": 1,
    "drop_threshold": 0.0,     # every drop; a falco.yaml's syscall_event_drops gives 0.1
    "otlp_exporter": None,     # "otlp" / "none" (tracing.enabled); None: OTEL_* decide
    "otlp_timeout": None,      # seconds per export
    "otlp_export_timeout_ms": None,
}


def add_config_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--config FILE` on the agent's parser (or one of its groups), and the defaults of
    the settings only a config file gives."""
    parser.add_argument("-c", "--config", metavar="FILE",
                        default=os.environ.get("ENFORCER_CONFIG") or None,
                        help="YAML file of agent settings, ours or Falco's falco.yaml (see "
                             "`enforcer schema config`, docs/config.example.yaml and "
                             "docs/falco-compat.md); flags win over it, it wins over "
                             "ENFORCER_* variables (env ENFORCER_CONFIG); read once at start")
    parser.add_argument("-o", "--option", dest="config_options", action="append",
                        metavar="KEY=VALUE", default=[],
                        help="set a configuration key, as Falco's -o: key.sub=value, "
                             "'list[]=value' appends, '{...}' is YAML (repeatable; applied "
                             "after the --config file, in order)")
    parser.set_defaults(**CONFIG_ONLY_DEFAULTS)


def reparse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                        args: argparse.Namespace) -> argparse.Namespace:
    """`args` again, with the config file's settings as the defaults under the command
    line. Raises ConfigError (FILE:LINE:COL of each problem; exit 2)."""
    path = getattr(args, "config", None)
    overrides = getattr(args, "config_options", None) or []
    if not path and not overrides:
        return args
    from enforcer.cli.falco_config import falco_defaults  # noqa: PLC0415
    from enforcer.cli.rules_args import print_diagnostics  # noqa: PLC0415
    from enforcer.config.loader import read_config  # noqa: PLC0415

    loaded = read_config(path, overrides)
    print_diagnostics(loaded.warnings, sys.stderr)
    where = path or "-o"

    def warn(text: str) -> None:
        print(f"enforcer: warning: {where}: {text}", file=sys.stderr)

    try:
        defaults = falco_defaults(loaded.data, warn)
    except RuleError as exc:  # append_output entries
        raise ConfigError(exc.diagnostics) from None
    except ValueError as exc:  # a ring the page size cannot make (enforcer.config.ring_buffer)
        raise ConfigError([Diagnostic(where, 1, 1, f"engine: {exc}")]) from None
    ours = config_defaults(loaded.data)
    if "extra_field" in defaults and "extra_field" in ours:  # static_fields + extra_fields
        ours["extra_field"] = defaults["extra_field"] + ours["extra_field"]
    parser.set_defaults(**{**defaults, **ours})
    return parser.parse_args(argv)


def config_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """The parser defaults (option dests) that a validated config file sets."""
    out: dict[str, Any] = {}
    simple = {"node_name": "node_name", "dry_run": "dry_run", "format": "format",
              "http_addr": "http_addr"}
    for key, dest in simple.items():
        if key in config:
            out[dest] = config[key]
    if "min_priority" in config:
        out["min_priority"] = Priority.parse(config["min_priority"])
    if "extra_fields" in config:
        out["extra_field"] = [f"{k}={_text(v)}" for k, v in config["extra_fields"].items()]
    if "kubernetes_events" in config:
        out["kubernetes_events"] = "true" if config["kubernetes_events"] else "false"
    out.update(_outputs(config.get("outputs") or {}))
    audit = config.get("audit") or {}
    if "log" in audit:
        out["audit_log"] = audit["log"]
    if "max_bytes" in audit:
        out["audit_max_bytes"] = parse_size(audit["max_bytes"])
    if "fsync" in audit:
        out["audit_fsync"] = audit["fsync"]
    if "unready_on_failure" in audit:
        out["audit_unready_on_failure"] = bool(audit["unready_on_failure"])
    out.update(_tracing(config.get("tracing") or {}))
    guards = config.get("guards") or {}
    if "protected_namespaces" in guards:
        out["protected_namespace"] = list(guards["protected_namespaces"])
    if "action_budget" in guards:
        out["action_budget"] = guards["action_budget"]
    breaker = guards.get("breaker") or {}
    for key in ("workloads", "window", "cooloff"):
        if key in breaker:
            out[f"breaker_{key}"] = breaker[key]
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "min_priority" in outputs:
        out["output_min_priority"] = Priority.parse(outputs["min_priority"])
    if "queue_size" in outputs:
        out["output_queue_size"] = outputs["queue_size"]
    if "enabled" in (outputs.get("stdout") or {}):
        out["stdout_enabled"] = outputs["stdout"]["enabled"]
    if "file" in outputs:
        out["output_file"] = outputs["file"]["path"]
    if "webhooks" in outputs:
        # The file's list replaces ENFORCER_WEBHOOK_URL (config > env); --webhook-url on
        # the command line replaces the list.
        out["webhook_url"] = None
        out["webhooks"] = [dict(w) for w in outputs["webhooks"]]
    program = outputs.get("program")
    if program:
        out["program_output"] = json.dumps(program["argv"])
        if "keep_alive" in program:
            out["program_keep_alive"] = program["keep_alive"]
        if "min_priority" in program:
            out["program_min_priority"] = Priority.parse(program["min_priority"])
    return out


def _tracing(tracing: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "enabled" in tracing:
        out["otlp_exporter"] = "otlp" if tracing["enabled"] else "none"
    for key, dest in (("protocol", "otlp_protocol"), ("endpoint", "otlp_endpoint"),
                      ("insecure", "otlp_insecure")):
        if key in tracing:
            out[dest] = tracing[key]
    if "headers" in tracing:
        out["otlp_header"] = [f"{k}={v}" for k, v in tracing["headers"].items()]
    if "timeout" in tracing:
        out["otlp_timeout"] = parse_duration(tracing["timeout"])
    batch = tracing.get("batch") or {}
    for key, dest in (("max_queue_size", "otlp_max_queue_size"),
                      ("max_export_batch_size", "otlp_max_export_batch_size")):
        if key in batch:
            out[dest] = batch[key]
    if "schedule_delay" in batch:
        out["otlp_schedule_delay_ms"] = parse_duration(batch["schedule_delay"]) * 1000
    if "export_timeout" in batch:
        out["otlp_export_timeout_ms"] = parse_duration(batch["export_timeout"]) * 1000
    return out
