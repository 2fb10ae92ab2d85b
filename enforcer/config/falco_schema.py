"""The keys of Falco 0.44's falco.yaml, as our configuration file reads them.

`falco_properties()` are the keys the agent acts on, each closed like our own (a misspelt
sub-key is an error with "did you mean"); `NOT_APPLICABLE` are Falco's keys that have no
meaning for this agent: a file may hold them (Falco's shipped falco.yaml does), and each
gives one warning naming why. How each read key maps onto the agent's settings is
enforcer.cli.falco_config; docs/falco-compat.md is the table for users."""

from __future__ import annotations

from typing import Any

_B = {"type": "boolean"}
_S = {"type": "string"}
_I = {"type": "integer"}
_N = {"type": "number"}
_STRINGS = {"type": "array", "items": _S}

# Falco key -> why it does not apply here (one warning each when a file sets it).
NOT_APPLICABLE: dict[str, str] = {
    "capture": "no capture files: use the snapshot action of a response policy",
    "load_plugins": "plugins are not supported (syscall source only)",
    "plugins": "plugins are not supported (syscall source only)",
    "plugins_hostinfo": "plugins are not supported",
    "buffer_format_base64": "buffers are not printed",
    "log_stderr": "the agent always logs to stderr",
    "log_syslog": "the agent logs to stderr only (alerts can go to syslog: syslog_output)",
    "log_level": "the agent's log has no levels to choose",
    "libs_logger": "there are no Falco libs",
    "output_timeout": "each output runs on its own worker with a bounded queue instead",
    "syscall_event_timeouts": "the probes' ring buffer has no event timeouts",
    "metrics": "Falco's periodic metrics output: the agent serves Prometheus /metrics instead "
               "(Falco's names included)",
    "base_syscalls": "the rules decide which syscalls are attached",
    "falco_libs": "there are no Falco libs: the process table is the agent's own",
    "container_engines": "container metadata comes from the container and CRI sockets "
                         "(--container-socket, --cri-socket)",
    "grpc": "gRPC output is gone from Falco 0.43+ and not offered",
    "grpc_output": "gRPC output is gone from Falco 0.43+ and not offered",
    "modern_bpf": "the agent's own eBPF probes (bcc) are the only engine",
    "falcoctl": "rules are delivered by GitOps or a ConfigMap, not falcoctl",
}


def _object(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties,
            **extra}


# Falco's buf_size_preset: one buffer of 1 MiB << (preset - 1) (enforcer.config.ring_buffer)
_PRESET = {"type": "integer", "minimum": 1, "maximum": 10,
           "description": "a buf_size_preset from 1 to 10 (1 MiB to 512 MiB per buffer, "
                          "doubling; Falco's default 4 is 8 MiB)"}


def _engine() -> dict[str, Any]:
    """Falco's `engine` block: the kind, and each kind's own settings."""
    return _object({
        "kind": {"enum": ["modern_ebpf", "kmod", "replay", "nodriver"]},
        "kmod": _object({"buf_size_preset": _PRESET, "drop_failed_exit": _B}),
        "modern_ebpf": _object({
            "cpus_for_each_buffer": {"type": "integer", "minimum": 0},
            "buf_size_preset": _PRESET, "drop_failed_exit": _B, "disable_iterators": _B}),
        "replay": _object({"capture_file": _S}),
    })


def falco_properties(priority: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema properties of the falco.yaml keys the agent reads."""
    selection = _object({"rule": _S, "tag": _S})
    return {
        "config_files": {"type": "array", "items": {"anyOf": [
            {"type": "string", "minLength": 1},
            _object({"path": {"type": "string", "minLength": 1},
                     "strategy": {"enum": ["append", "override", "add-only"]}},
                    required=["path"])]}},
        "watch_config_files": _B,
        "engine": _engine(),
        "rules_files": _STRINGS,
        "rule_files": _STRINGS,
        "rules": {"type": "array", "items": _object({"enable": selection,
                                                     "disable": selection})},
        "time_format_iso_8601": _B,
        "priority": priority,
        "json_output": _B,
        "json_include_output_property": _B,
        "json_include_message_property": _B,
        "json_include_output_fields_property": _B,
        "json_include_tags_property": _B,
        "buffered_outputs": _B,
        "rule_matching": {"enum": ["first", "all"]},
        "outputs_queue": _object({"capacity": {"type": "integer", "minimum": 0}}),
        "append_output": {"type": "array", "items": {"type": "object"}},
        "static_fields": {"type": "object",
                          "additionalProperties": {"type": ["string", "number", "boolean"]}},
        "stdout_output": _object({"enabled": _B}),
        "syslog_output": _object({"enabled": _B}),
        "file_output": _object({"enabled": _B, "keep_alive": _B, "filename": _S}),
        "http_output": _object({
            "enabled": _B, "url": _S, "user_agent": _S, "insecure": _B, "ca_cert": _S,
            "ca_bundle": _S, "ca_path": _S, "mtls": _B, "client_cert": _S, "client_key": _S,
            "echo": _B, "compress_uploads": _B, "keep_alive": _B,
            "max_consecutive_timeouts": _I}),
        "program_output": _object({"enabled": _B, "keep_alive": _B, "program": _S}),
        "webserver": _object({
            "enabled": _B, "threadiness": _I,
            "listen_port": {"type": "integer", "minimum": 0, "maximum": 65535},
            "listen_address": _S,
            "k8s_healthz_endpoint": {"type": "string", "pattern": "^/",
                                     "description": "a path starting with /"},
            "prometheus_metrics_enabled": _B, "ssl_enabled": _B, "ssl_certificate": _S}),
        "syscall_event_drops": _object({
            "threshold": {"type": "number", "minimum": 0, "maximum": 1},
            "actions": {"type": "array",
                        "items": {"enum": ["ignore", "log", "alert", "exit"]}},
            "rate": {"type": "number", "exclusiveMinimum": 0},
            "max_burst": {"type": "integer", "minimum": 1},
            "simulate_drops": _B}),
        **{key: {} for key in NOT_APPLICABLE},
    }
