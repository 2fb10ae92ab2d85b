"""Falco's falco.yaml keys, as agent settings (parser defaults under the command line).

A Falco user's file keeps working: each key Falco 0.44 documents maps onto what the agent
has (docs/falco-compat.md is the table), the keys that do not apply are warned about once
each by the loader, and our own keys stay. Where a file holds both Falco's key and ours
for one setting (`priority` and `min_priority`, say), ours wins: it is the more specific.

Choices where Falco and the agent differ, said here once:
- `rules_files` paths that do not exist are skipped, as Falco skips them; when none exists
  the bundled rules load (with a warning), so Falco's shipped file starts the agent on a
  machine without /etc/falco.
- `program_output.program` is run by `/bin/sh -c`, as Falco's popen runs it: the command is
  the operator's own text, never built from event data (alerts go to its stdin).
- `watch_config_files: false` turns hot reload of rules and policies off; the config file
  itself is read once at start either way.
- `buffered_outputs` is read and has no effect: every alert is flushed as it is written.
- `outputs_queue.capacity: 0` (Falco: unbounded) keeps the agent's bounded default queue.
- `webserver.k8s_healthz_endpoint` is served besides /healthz (Falco: instead of it), so the
  chart's probes keep working.
- `engine` sizes the probes' one ring as Falco's buffers together
  (enforcer.config.ring_buffer: the preset's size times the buffers Falco would map here).
- `syscall_event_drops.threshold` defaults to Falco's 0.1 only with a falco.yaml's block;
  the agent's own default is 0 (every drop is said).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from enforcer.config.ring_buffer import engine_ring_bytes, ring_pages
from enforcer.outputs.formats import AlertShape
from enforcer.priority import Priority

# falco.yaml key -> AlertShape field (enforcer.outputs.formats)
_SHAPE_KEYS = {"json_include_output_property": "output",
               "json_include_message_property": "message",
               "json_include_output_fields_property": "output_fields",
               "json_include_tags_property": "tags",
               "time_format_iso_8601": "iso8601"}


def falco_defaults(config: dict[str, Any], warn: Any) -> dict[str, Any]:
    """Parser defaults (option dests) from the Falco keys of a validated `config`; `warn`
    receives one sentence per setting that is read but changed or dropped."""
    out: dict[str, Any] = {}
    files = config.get("rules_files", config.get("rule_files"))
    if files is not None:
        present = [f for f in files if Path(f).exists()]
        if present:
            out["rules"] = present
        elif files:
            warn(f"none of rules_files exists ({', '.join(files)}): loading the bundled "
                 "rules")
    selections = []
    for item in config.get("rules") or []:
        for verb, enable in (("enable", True), ("disable", False)):
            what = item.get(verb) or {}
            for kind in ("rule", "tag"):
                if kind in what:
                    selections.append((enable, kind, what[kind]))
    if selections:
        out["rule_selections"] = selections
    if "json_output" in config:
        out["format"] = "json" if config["json_output"] else "text"
        out["json_output"] = bool(config["json_output"])
    shape = {field: bool(config[key]) for key, field in _SHAPE_KEYS.items() if key in config}
    if shape:
        out["alert_shape"] = AlertShape(**shape)
    if "priority" in config:
        out["min_priority"] = Priority.parse(config["priority"])
    if "rule_matching" in config:
        out["rule_matching"] = config["rule_matching"]
    if "append_output" in config:  # even empty: it replaces the shipped default
        out["append_output_entries"] = _append_output(config["append_output"] or [])
    if config.get("static_fields"):
        out["extra_field"] = [f"{k}={_text(v)}" for k, v in config["static_fields"].items()]
    out.update(_outputs(config, warn))
    out.update(_webserver(config.get("webserver")))
    if config.get("watch_config_files") is False:
        out["reload_interval"] = 0.0
    size = engine_ring_bytes(config.get("engine"), warn)
    if size is not None:  # ValueError: a page size the ring cannot be made of
        out["ringbuf_pages"] = ring_pages(size, os.sysconf("SC_PAGE_SIZE"))
    drops = config.get("syscall_event_drops")
    if drops is not None:
        actions = tuple(drops.get("actions", ("log", "alert")))
        if "exit" in actions:
            warn("syscall_event_drops.actions: exit is not offered (an enforcing agent that "
                 "exits stops protecting the node); drops are logged instead")
            actions = tuple(dict.fromkeys(a if a != "exit" else "log" for a in actions))
        out["drop_actions"] = actions
        out["drop_rate"] = float(drops.get("rate", 0.03333))
        out["drop_max_burst"] = int(drops.get("max_burst", 1))
        out["drop_threshold"] = float(drops.get("threshold", 0.1))
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _outputs(config: dict[str, Any], warn: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "enabled" in (config.get("stdout_output") or {}):
        out["stdout_enabled"] = bool(config["stdout_output"]["enabled"])
    if "enabled" in (config.get("syslog_output") or {}):
        out["syslog_output"] = bool(config["syslog_output"]["enabled"])
    file_output = config.get("file_output") or {}
    if file_output.get("enabled"):
        out["output_file"] = file_output.get("filename") or "./events.txt"
    program = config.get("program_output") or {}
    if program.get("enabled") and program.get("program"):
        out["program_output"] = json.dumps(["/bin/sh", "-c", program["program"]])
        out["program_keep_alive"] = bool(program.get("keep_alive", False))
    http = config.get("http_output") or {}
    if http.get("enabled") and http.get("url"):
        hook: dict[str, Any] = {"url": http["url"]}
        if http.get("user_agent"):
            hook["headers"] = {"User-Agent": http["user_agent"]}
        ca = http.get("ca_cert") or http.get("ca_bundle")
        if ca:
            hook["ca_file"] = ca
        out["webhook_url"] = None
        out["webhooks"] = [hook]
        for key in ("mtls", "insecure", "compress_uploads", "echo"):
            if http.get(key):
                warn(f"http_output.{key}: true is not supported by the webhook output and "
                     "is ignored")
    capacity = (config.get("outputs_queue") or {}).get("capacity")
    if capacity:
        out["output_queue_size"] = capacity
    return out


def _webserver(web: dict[str, Any] | None) -> dict[str, Any]:
    """Falco's webserver is the agent's HTTP server: /metrics, /healthz, /readyz."""
    if web is None:
        return {}
    if web.get("enabled") is False:
        return {"http_addr": "off"}
    # Falco's defaults (0.0.0.0:8765) for what the block leaves out: a falco.yaml that
    # has a webserver block gets Falco's port, so its scrape configs keep working
    address = web.get("listen_address", "0.0.0.0")
    host = f"[{address}]" if ":" in address else address
    out: dict[str, Any] = {"http_addr": f"{host}:{web.get('listen_port', 8765)}"}
    if web.get("k8s_healthz_endpoint"):
        out["health_path"] = web["k8s_healthz_endpoint"]
    if web.get("ssl_enabled"):
        out["http_tls_pem"] = web.get("ssl_certificate") or "/etc/falco/falco.pem"
    return out


def _append_output(entries: list[Any]) -> list[Any]:
    """Falco's append_output list, parsed by the rules' append_output reader
    (suggested_output included)."""
    from enforcer.rules.append_output import parse_append_output  # noqa: PLC0415

    return parse_append_output(yaml.safe_dump({"append_output": entries}),
                               "falco.yaml append_output")
