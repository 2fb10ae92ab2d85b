"""The JSON Schema of the agent's configuration file (`enforcer schema config`).

The file is YAML, shaped like falco.yaml: one mapping of settings, each optional; Falco's
own keys are accepted too (enforcer.config.falco_schema), so a falco.yaml loads as it is.
Every mapping is closed (`additionalProperties: false`), so a misspelt key is an error at
start, never a setting silently ignored."""

from __future__ import annotations

from typing import Any

from enforcer.config.falco_schema import falco_properties
from enforcer.units import DURATION_PATTERN, SIZE_PATTERN

DURATION = {"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                      {"type": "string", "pattern": DURATION_PATTERN}],
            "description": "a duration: seconds, or a string such as 500ms, 10s, 1m"}
SIZE = {"anyOf": [{"type": "integer", "minimum": 1},
                  {"type": "string", "pattern": SIZE_PATTERN}],
        "description": "a size: bytes, or a string such as 512Ki, 100Mi (powers of 1024), "
                       "1G (powers of 1000)"}
PRIORITY = {"type": "string",
            "pattern": r"(?i)^\s*(emergency|alert|critical|error|warning|notice|"
                       r"informational|info|debug)\s*$",
            "description": "a Falco priority: emergency, alert, critical, error, warning, "
                           "notice, informational or debug"}
HTTP_URL = {"type": "string", "pattern": r"^https?://[^\s/]+", "description":
            "an http:// or https:// URL"}
HEADERS = {"type": "object", "additionalProperties": {"type": "string"}}
COUNT = {"type": "integer", "minimum": 1}


def _object(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties,
            **extra}


def config_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the agent's configuration file."""
    webhook = _object({
        "url": HTTP_URL,
        "headers": HEADERS,
        "timeout": DURATION,
        "retries": {"type": "integer", "minimum": 0},
        "min_priority": PRIORITY,
        "ca_file": {"type": "string"},
    }, required=["url"])
    outputs = _object({
        "min_priority": PRIORITY,
        "queue_size": COUNT,
        "stdout": _object({"enabled": {"type": "boolean"}}),
        "file": _object({"path": {"type": "string", "minLength": 1}}, required=["path"]),
        "webhooks": {"type": "array", "items": webhook},
        "program": _object({
            "argv": {"type": "array", "minItems": 1,
                     "items": {"type": "string", "minLength": 1}},
            "keep_alive": {"type": "boolean"},
            "min_priority": PRIORITY,
        }, required=["argv"]),
    })
    tracing = _object({
        "enabled": {"type": "boolean"},
        "protocol": {"enum": ["grpc", "http/protobuf"]},
        "endpoint": HTTP_URL,
        "headers": HEADERS,
        "insecure": {"type": "boolean"},
        "timeout": DURATION,
        "batch": _object({
            "max_queue_size": COUNT,
            "schedule_delay": DURATION,
            "max_export_batch_size": COUNT,
            "export_timeout": DURATION,
        }),
    })
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://enforcer.dev/schemas/config.json",
        "title": "enforcer agent configuration",
        **_object({
            **falco_properties(PRIORITY),
            "node_name": {"type": "string", "minLength": 1},
            "dry_run": {"type": "boolean"},
            "format": {"enum": ["json", "text"]},
            "min_priority": PRIORITY,
            "extra_fields": {"type": "object", "additionalProperties": {
                "type": ["string", "number", "boolean"]}},
            "http_addr": {"type": "string", "pattern": r"^((?i:off|none)|.*:\d{1,5})$",
                          "description": "HOST:PORT (e.g. 0.0.0.0:9376), or off"},
            "kubernetes_events": {"type": "boolean"},
            "outputs": outputs,
            "audit": _object({"log": {"type": "string", "minLength": 1},
                              "max_bytes": SIZE,
                              "fsync": {"type": "string", "minLength": 1,
                                        "description": "never, always or a duration (1s)"},
                              "unready_on_failure": {"type": "boolean"}}),
            "tracing": tracing,
            "guards": _object({
                "protected_namespaces": {"type": "array",
                                         "items": {"type": "string", "minLength": 1}},
                # deprecated and ignored (the node-wide budget is gone): see breaker
                "action_budget": {"type": "integer", "minimum": 0, "deprecated": True,
                                  "description": "deprecated and ignored; use breaker"},
                "breaker": _object({"workloads": COUNT, "window": DURATION,
                                    "cooloff": DURATION}),
            }),
        }),
    }
