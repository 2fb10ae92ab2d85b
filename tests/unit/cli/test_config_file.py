"""`enforcer --config FILE`: the agent's settings from YAML, checked against the published
JSON Schema with FILE:LINE:COL errors (exit 2), and the documented precedence:
command-line flag > config file > ENFORCER_* > OTEL_* > defaults."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from enforcer.audit.tracing import TracingConfig
from enforcer.cli.config_args import reparse_with_config
from enforcer.cli.main import build_parser
from enforcer.cli.observe_args import _outputs, tracing_config
from enforcer.config.falco_schema import falco_properties
from enforcer.config.loader import load_config
from enforcer.config.schema import config_schema
from enforcer.priority import Priority
from tests.conftest import REPO
from tests.unit.clirun import run_cli

EXAMPLE = REPO / "docs" / "config.example.yaml"


def agent_args(argv: list[str]) -> argparse.Namespace:
    """Parse as `enforcer` does for the live agent (the environment is read here)."""
    parser = build_parser()
    return reparse_with_config(parser, argv, parser.parse_args(argv))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "enforcer.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "where", "message"), [
    ("outputs:\n  webhook:\n    - url: http://x/\n", "2:3",
     "unknown key 'webhook' in outputs; did you mean 'webhooks'?"),
    ("tracing:\n  batch:\n    max_queue_size: ten\n", "3:21",
     "tracing.batch.max_queue_size must be an integer, not a string"),
    ("format: xml\n", "1:9", "format must be one of json, text, not 'xml'"),
    ("# agent\nnode_name: n\ntracing:\n  protocol: http/json\n", "4:13",
     "tracing.protocol must be one of grpc, http/protobuf"),
    ("outputs:\n  webhooks:\n    - url: http://a/\n    - headers: {A: b}\n", "4:7",
     "outputs.webhooks[1]: 'url' is a required property"),
    ("outputs:\n  webhooks:\n    - url: http://a/\n      timeout: soon\n", "4:16",
     "outputs.webhooks[0].timeout must be a duration"),
    ("guards: [kube-system]\n", "1:9", "guards must be a mapping, not a list"),
    ("tracing:\n  endpoint: collector:4317\n", "2:13",
     "tracing.endpoint must be an http:// or https:// URL"),
    ("tracing: {enabled: yes please}\n", "1:20", "tracing.enabled must be a boolean"),
    ("audit:\n  max_bytes: lots\n", "2:14", "audit.max_bytes must be a size"),
    ("http_addr: [\n", "2:1", "invalid YAML"),
    ("http_addr: 9376\n", "1:12", "http_addr must be a string, not an integer"),
    ("http_addr: localhost\n", "1:12", "http_addr must be HOST:PORT (e.g. 0.0.0.0:9376), or "
                                       "off, not 'localhost'"),
    ("- format: json\n", "1:1", "the config file must be a mapping, not a list"),
])
def test_a_bad_config_file_is_located_and_exits_2(tmp_path: Path, text: str, where: str,
                                                 message: str) -> None:
    path = write(tmp_path, text)
    result = run_cli("--config", path, "--source", "falco-http")
    assert result.code == 2, result.stderr
    assert f"{path}:{where}: {message}" in result.stderr
    assert "invalid --config file" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_problem_is_reported_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, "formt: json\nguards:\n  action_budget: -1\n  budget: 3\n")
    lines = [line for line in run_cli("--config", path).stderr.splitlines()
             if line.startswith(str(path))]
    assert [line.split(": ", 1)[0] for line in lines] == [f"{path}:1:1", f"{path}:3:18",
                                                          f"{path}:4:3"]


def test_enforcer_config_names_the_file_and_a_missing_file_is_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENFORCER_CONFIG", str(tmp_path / "missing.yaml"))
    result = run_cli("--source", "falco-http")
    assert result.code == 2
    assert f"{tmp_path / 'missing.yaml'}:1:1: cannot read the config file" in result.stderr
    # the config file is the live agent's: other commands do not read it
    assert run_cli("schema", "config").code == 0


def test_the_schema_command_prints_the_schema_the_loader_uses() -> None:
    result = run_cli("schema", "config")
    assert result.code == 0
    assert json.loads(result.stdout) == config_schema()
    jsonschema.Draft202012Validator.check_schema(config_schema())


def test_the_shipped_example_is_valid_and_sets_every_setting() -> None:
    config = load_config(EXAMPLE)
    jsonschema.validate(config, config_schema())

    def keys(schema: dict, data: dict, prefix: str = "") -> set[str]:
        out = set()
        for key, sub in schema.get("properties", {}).items():
            if sub.get("deprecated"):
                continue  # accepted and ignored: the example does not show it
            out.add(prefix + key)
            if sub.get("type") == "object" and isinstance(data.get(key), dict):
                out |= keys(sub, data[key], f"{prefix}{key}.")
        return out

    ours = {k for k in keys(config_schema(), config)  # Falco's keys: docs/falco-compat.md
            if k.split(".")[0] not in falco_properties({})}
    assert ours <= {k for k in _flatten(config)}


def _flatten(data: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in data.items():
        out.add(prefix + key)
        if isinstance(value, dict) and key not in ("extra_fields", "headers"):
            out |= _flatten(value, f"{prefix}{key}.")
    return out


# -- precedence -------------------------------------------------------------------------

CASES = [
    # (setting in the file, ENFORCER_* variable, flag, dest, default, env, file, flag values)
    ("guards: {action_budget: 9}", "ENFORCER_ACTION_BUDGET", "--action-budget", "action_budget",
     None, ("7", 7), 9, ("11", 11)),
    ("guards: {breaker: {workloads: 9}}", "ENFORCER_BREAKER_WORKLOADS", "--breaker-workloads",
     "breaker_workloads", 5, ("7", 7), 9, ("11", 11)),
    ("guards: {breaker: {window: 9m}}", "ENFORCER_BREAKER_WINDOW", "--breaker-window",
     "breaker_window", "600s", ("7m", "7m"), "9m", ("11m", "11m")),
    ("guards: {breaker: {cooloff: 90}}", "ENFORCER_BREAKER_COOLOFF", "--breaker-cooloff",
     "breaker_cooloff", "600s", ("70s", "70s"), 90, ("110s", "110s")),
    ("format: json", "ENFORCER_FORMAT", "--format", "format", "json", ("text", "text"),
     "json", ("text", "text")),
    ("http_addr: 127.0.0.1:7001", "ENFORCER_HTTP_ADDR", "--http-addr", "http_addr",
     "0.0.0.0:9376", ("127.0.0.1:7000", "127.0.0.1:7000"), "127.0.0.1:7001",
     ("127.0.0.1:7002", "127.0.0.1:7002")),
    ("node_name: from-file", "ENFORCER_NODE_NAME", "--node-name", "node_name", None,
     ("from-env", "from-env"), "from-file", ("from-flag", "from-flag")),
    ("audit: {log: /file.jsonl}", "ENFORCER_AUDIT_LOG", "--audit-log", "audit_log",
     "/var/log/enforcer/audit.jsonl", ("/env.jsonl", "/env.jsonl"), "/file.jsonl",
     ("/flag.jsonl", "/flag.jsonl")),
    ("audit: {max_bytes: 2Mi}", "ENFORCER_AUDIT_MAX_BYTES", "--audit-max-bytes",
     "audit_max_bytes", 100 << 20, ("1Mi", 1 << 20), 2 << 20, ("3Mi", 3 << 20)),
    ("outputs: {min_priority: error}", "ENFORCER_OUTPUT_MIN_PRIORITY",
     "--output-min-priority", "output_min_priority", Priority.DEBUG,
     ("notice", Priority.NOTICE), Priority.ERROR, ("critical", Priority.CRITICAL)),
    ("outputs: {queue_size: 50}", "ENFORCER_OUTPUT_QUEUE_SIZE", "--output-queue-size",
     "output_queue_size", 1000, ("40", 40), 50, ("60", 60)),
    ("outputs: {file: {path: /file.out}}", "ENFORCER_OUTPUT_FILE", "--output-file",
     "output_file", None, ("/env.out", "/env.out"), "/file.out", ("/flag.out", "/flag.out")),
]


@pytest.mark.parametrize("case", CASES, ids=[c[3] for c in CASES])
def test_flag_beats_file_beats_environment_beats_default(
        case: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text, env, flag, dest, default, (env_text, env_value), file_value, (flag_text,
                                                                        flag_value) = case
    for name in ("ENFORCER_CONFIG", env, "ENFORCER_HTTP_ADDR", "NODE_NAME"):
        monkeypatch.delenv(name, raising=False)
    path = write(tmp_path, text + "\n")
    assert getattr(agent_args([]), dest) == default
    monkeypatch.setenv(env, env_text)
    assert getattr(agent_args([]), dest) == env_value
    assert getattr(agent_args(["--config", str(path)]), dest) == file_value
    assert getattr(agent_args(["--config", str(path), flag, flag_text]), dest) == flag_value
    monkeypatch.setenv("ENFORCER_CONFIG", str(path))
    assert getattr(agent_args([]), dest) == file_value


def test_lists_and_mappings_merge_with_the_flag_winning_on_a_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENFORCER_EXTRA_FIELDS", "from=env")
    monkeypatch.setenv("ENFORCER_PROTECTED_NAMESPACES", "env-ns")
    path = write(tmp_path, "extra_fields: {environment: production, team: sec, n: 3}\n"
                           "guards: {protected_namespaces: [monitoring]}\n")
    args = agent_args(["--config", str(path), "--extra-field", "team=blue",
                       "--protected-namespace", "cli-ns"])
    from enforcer.outputs.extra_fields import parse_extra_fields
    assert parse_extra_fields(args.extra_field) == {"environment": "production",
                                                    "team": "blue", "n": "3"}
    assert args.protected_namespace == ["monitoring", "cli-ns"]


def test_webhooks_from_the_file_replace_the_environment_and_a_flag_replaces_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENFORCER_WEBHOOK_URL", "http://env-hook/")
    path = write(tmp_path, """
outputs:
  webhooks:
    - url: http://sidekick:2801/
      headers: {Authorization: Bearer t0ken}
      timeout: 2s
      retries: 1
      min_priority: warning
    - url: https://siem.example/ingest
""")

    def hooks(args: argparse.Namespace) -> list[tuple[str, str, dict, float, int, Priority]]:
        return [(s.name, s.output.config.url, dict(s.output.config.headers),
                 s.output.config.timeout, s.output.config.max_retries, s.min_priority)
                for s in _outputs(args, [])]

    assert hooks(agent_args([])) == [("webhook", "http://env-hook/", {}, 5.0, 3,
                                      Priority.DEBUG)]
    assert hooks(agent_args(["--config", str(path)])) == [
        ("webhook", "http://sidekick:2801/", {"Authorization": "Bearer t0ken"}, 2.0, 1,
         Priority.WARNING),
        ("webhook2", "https://siem.example/ingest", {}, 5.0, 3, Priority.DEBUG)]
    assert [h[1] for h in hooks(agent_args(["--config", str(path), "--webhook-url",
                                            "http://flag-hook/"]))] == ["http://flag-hook/"]


def test_program_and_stdout_outputs_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "outputs:\n  stdout: {enabled: false}\n  program:\n"
                           "    argv: [logger, -t, enforcer]\n    keep_alive: true\n"
                           "    min_priority: critical\n")
    args = agent_args(["--config", str(path)])
    assert args.stdout_enabled is False
    (program,) = _outputs(args, [])
    assert list(program.output.config.argv) == ["logger", "-t", "enforcer"]
    assert program.output.config.keep_alive is True
    assert program.min_priority == Priority.CRITICAL


def test_tracing_settings_the_file_leaves_out_are_left_to_otel(tmp_path: Path) -> None:
    silent = write(tmp_path, "node_name: n\n")
    assert tracing_config(agent_args(["--config", str(silent)])) == TracingConfig()
    full = tmp_path / "full.yaml"
    full.write_text("""
tracing:
  enabled: true
  protocol: grpc
  endpoint: http://collector:4317
  headers: {x-token: abc}
  insecure: true
  timeout: 7s
  batch: {max_queue_size: 64, schedule_delay: 250ms, max_export_batch_size: 16,
          export_timeout: 3s}
""")
    assert tracing_config(agent_args(["--config", str(full)])) == TracingConfig(
        exporter="otlp", protocol="grpc", endpoint="http://collector:4317",
        headers={"x-token": "abc"}, timeout=7.0, insecure=True, max_queue_size=64,
        max_export_batch_size=16, schedule_delay_ms=250.0, export_timeout_ms=3000.0)
    off = write(tmp_path, "tracing: {enabled: false}\n")
    assert tracing_config(agent_args(["--config", str(off)])).exporter == "none"
    # a flag still wins over the file
    assert tracing_config(agent_args(["--config", str(full), "--otlp-protocol",
                                      "http/protobuf"])).protocol == "http/protobuf"


def test_the_example_parses_into_agent_settings() -> None:
    args = agent_args(["--config", str(EXAMPLE)])
    data = yaml.safe_load(EXAMPLE.read_text())
    breaker = data["guards"]["breaker"]
    assert (args.breaker_workloads, args.breaker_window, args.breaker_cooloff) == (
        breaker["workloads"], breaker["window"], breaker["cooloff"])
    assert args.action_budget is None  # deprecated: not in the example
    assert args.kubernetes_events == ("true" if data["kubernetes_events"] else "false")
