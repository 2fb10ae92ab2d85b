"""The JSON Schema of response policy files, built from the actions' own Params, so the
schema, the loader and `enforcer actions show` cannot drift apart."""

from __future__ import annotations

from typing import Any

from actions import registry
from enforcer.units import DURATION_PATTERN

DURATION = {"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                      {"type": "string", "pattern": DURATION_PATTERN}]}
PRIORITY = {"type": "string", "pattern": r"(?i)^\s*(>=|<=|==|>|<)?\s*(emergency|alert|critical|"
                                         r"error|warning|notice|informational|info|debug)\s*$"}


def policy_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a policy file: a list of policies."""
    actions = []
    for name in registry.names():
        params = registry.get(name).params_type.json_schema()
        actions.append({"type": "object", "additionalProperties": False, "required": [name],
                        "properties": {name: {"anyOf": [params, {"type": "null"}]}}})
    scalar = {"type": ["string", "integer", "boolean"]}
    values = {"anyOf": [scalar, {"type": "array", "minItems": 1, "items": scalar}]}
    groups = {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/fields"}}
    fields = {"$ref": "#/$defs/fields"}
    fields_def = {"type": "object", "description": "field -> value(s), {not: value(s)}, "
                                                   "{in: value(s)}; any_of/all_of: groups",
                  "properties": {"any_of": groups, "all_of": groups},
                  "additionalProperties": {"anyOf": [values, {
                      "type": "object", "additionalProperties": False, "minProperties": 1,
                      "properties": {"in": values, "not": values}}]}}
    string_list = {"anyOf": [{"type": "string"},
                             {"type": "array", "items": {"type": "string", "minLength": 1}}]}
    policy = {
        "type": "object",
        "additionalProperties": False,
        "required": ["policy", "match", "actions"],
        "properties": {
            "policy": {"type": "string", "minLength": 1},
            "desc": {"type": "string"},
            "enabled": {"type": "boolean", "default": True},
            "override": {"type": "boolean", "default": False},
            "match": {
                "type": "object", "additionalProperties": False, "minProperties": 1,
                "properties": {
                    "rules": string_list,
                    "tags": string_list,
                    "priority": PRIORITY,
                    "fields": {"anyOf": [fields, {"type": "array", "minItems": 1,
                                                  "items": fields}]},
                    "source": {"type": "string"},
                },
            },
            "actions": {"type": "array", "minItems": 1, "items": {"anyOf": actions}},
            "dry_run": {"type": "boolean", "default": True},
            "final": {"type": "boolean", "default": False,
                      "description": "the last policy to answer a matching alert: the "
                                     "matching policies after it do not (Talon's rule "
                                     "`continue: false`)"},
            "rate_limit": {"type": "object", "additionalProperties": False,
                           "required": ["max"],
                           "properties": {"max": {"type": "integer", "minimum": 1},
                                          "per": DURATION,
                                          "burst": {"type": "integer", "minimum": 1}}},
            "cooldown": DURATION,
            "on_failure": {"enum": ["continue", "stop"], "default": "continue"},
            "breaker": {"type": "object", "additionalProperties": False,
                        "description": "blast radius: at most `workloads` distinct workloads "
                                       "(pods, containers, host users) acted on per "
                                       "`window`; over it the policy is suspended for new "
                                       "workloads for `cooloff` (defaults: --breaker-*)",
                        "properties": {"workloads": {"type": "integer", "minimum": 1},
                                       "window": DURATION, "cooloff": DURATION}},
            "escalate": {"type": "object", "additionalProperties": False,
                         "required": ["after", "actions"],
                         "description": "when one workload triggers the policy `after` "
                                        "times within `within`, run `actions` too",
                         "properties": {"after": {"type": "integer", "minimum": 2},
                                        "within": DURATION,
                                        "actions": {"type": "array", "minItems": 1,
                                                    "items": {"anyOf": actions}}}},
        },
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://enforcer.dev/schemas/policy.json",
            "title": "enforcer response policies",
            "$defs": {"fields": fields_def},
            "type": "array", "items": policy}
