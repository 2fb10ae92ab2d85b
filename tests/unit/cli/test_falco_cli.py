"""A Falco user's command line and falco.yaml work as they are: `-r` repeated adds up,
`-c falco.yaml` (Falco 0.44.1's shipped file, unchanged) configures the agent, `-o` sets a
key as Falco's does, and `-V`, `-L`, `-l`, `--list`, `-U`, `-M` do what Falco's do."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest
import yaml

from enforcer.cli.config_args import reparse_with_config
from enforcer.cli.main import build_parser
from enforcer.config.falco_schema import NOT_APPLICABLE
from enforcer.outputs.formats import AlertShape
from enforcer.priority import Priority
from tests.conftest import REPO
from tests.unit.clirun import run_cli

FALCO_YAML = REPO / "tests" / "data" / "falco-config" / "falco.yaml"
RULE = """- rule: {name}
  desc: the {name} rule
  condition: evt.type = openat and fd.name = /tmp/{name}
  output: "{name} opened (file=%fd.name)"
  priority: {priority}
  tags: [{tag}]
"""


def agent_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    return reparse_with_config(parser, argv, parser.parse_args(argv))


def rule_file(tmp_path: Path, name: str, priority: str = "WARNING", tag: str = "t") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(RULE.format(name=name, priority=priority, tag=tag))
    return path


def described(res) -> list[str]:
    return [line for line in res.stdout.splitlines() if not line.startswith(" ")]


@pytest.mark.parametrize("form", [["-r", "A", "-r", "B"], ["-r", "A", "B"],
                                  ["--rules", "A", "--rules", "B"], ["-r", "A", "--rules", "B"]])
def test_every_rules_option_adds_up_in_order(tmp_path: Path, form: list[str]) -> None:
    paths = {"A": str(rule_file(tmp_path, "alpha")), "B": str(rule_file(tmp_path, "beta"))}
    argv = [paths.get(a, a) for a in form]
    assert agent_args(argv).rules == [paths["A"], paths["B"]]
    res = run_cli("-L", *argv)
    assert res.code == 0, res.stderr
    assert described(res) == ["alpha", "beta"]


def test_policies_repeated_add_up_and_the_first_replaces_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENFORCER_POLICIES", "/env/a.yaml,/env/b.yaml")
    assert agent_args([]).policies == ["/env/a.yaml", "/env/b.yaml"]
    assert agent_args(["--policies", "A", "--policies", "B", "C"]).policies == ["A", "B", "C"]


def test_r_replaces_the_config_files_rules_files_as_in_falco(tmp_path: Path) -> None:
    a, b = rule_file(tmp_path, "alpha"), rule_file(tmp_path, "beta")
    config = tmp_path / "falco.yaml"
    config.write_text(f"rules_files:\n  - {a}\n  - {tmp_path / 'missing.yaml'}\n  - {b}\n")
    assert agent_args(["-c", str(config)]).rules == [str(a), str(b)]  # missing: skipped
    assert agent_args(["-c", str(config), "-r", str(b)]).rules == [str(b)]
    res = run_cli("-c", config, "-L")
    assert described(res) == ["alpha", "beta"]


def test_falcos_shipped_falco_yaml_configures_the_agent() -> None:
    res = run_cli("-c", FALCO_YAML, "-V", REPO / "policies" / "rules")
    assert res.code == 0, res.stderr
    warned = [line for line in res.stderr.splitlines() if ": warning: Falco's " in line]
    shipped_inapplicable = ["capture", "load_plugins", "plugins", "plugins_hostinfo",
                            "buffer_format_base64", "log_stderr", "log_syslog", "log_level",
                            "libs_logger", "output_timeout", "syscall_event_timeouts",
                            "metrics", "base_syscalls", "falco_libs"]
    assert [line.split("Falco's '")[1].split("'")[0] for line in warned] == \
        shipped_inapplicable  # one each, in order
    assert all(key in NOT_APPLICABLE for key in shipped_inapplicable)
    assert warned[0].startswith(f"{FALCO_YAML}:538:1: warning: Falco's 'capture' does not "
                                "apply")
    args = agent_args(["-c", str(FALCO_YAML)])
    assert args.format == "text"                       # json_output: false
    assert args.min_priority == Priority.DEBUG         # priority: debug
    assert args.rule_matching == "first"               # rule_matching: first
    assert args.http_addr == "0.0.0.0:8765"            # webserver.listen_address/port
    assert args.health_path == "/healthz"              # webserver.k8s_healthz_endpoint
    assert args.stdout_enabled is True and args.syslog_output is True
    assert args.output_file is None                    # file_output.enabled: false
    assert args.webhook_url is None and not args.webhooks  # http_output.enabled: false
    assert args.program_output is None                 # program_output.enabled: false
    assert args.drop_actions == ("log", "alert") and args.drop_max_burst == 1
    assert args.drop_threshold == 0.1 and agent_args([]).drop_threshold == 0.0
    assert args.http_tls_pem is None                   # webserver.ssl_enabled: false
    assert agent_args(["-c", str(FALCO_YAML), "-o", "webserver.ssl_enabled=true"]
                      ).http_tls_pem == "/etc/falco/falco.pem"
    assert args.rules is None                          # /etc/falco/... absent: bundled rules
    # engine.modern_ebpf: 8 MiB (preset 4) per 2 CPUs, as one ring
    buffers = -(-os.sysconf("SC_NPROCESSORS_ONLN") // 2)
    assert args.ringbuf_pages * os.sysconf("SC_PAGE_SIZE") == \
        min(512 << 20, 1 << ((8 << 20) * buffers - 1).bit_length())


def test_o_overrides_a_file_key_and_appends_to_lists(tmp_path: Path) -> None:
    a, b = rule_file(tmp_path, "alpha"), rule_file(tmp_path, "beta")
    argv = ["-c", str(FALCO_YAML), "-o", "webserver.listen_port=9999", "-o", "json_output=true",
            "-o", "priority=error", "-o", f"rules_files[]={a}", "-o", f"rules_files[]={b}",
            "-o", "append_output[]={match: {source: syscall}, extra_output: on CPU %evt.cpu}",
            "-o", "rules[]={disable: {rule: alpha}}"]
    args = agent_args(argv)
    assert args.http_addr == "0.0.0.0:9999"
    assert args.format == "json" and args.min_priority == Priority.ERROR
    assert args.rules == [str(a), str(b)]  # the shipped paths are missing here, so skipped
    # the shipped file's [{suggested_output: true}], then the appended entry
    assert [(e.suggested_output, e.extra_output) for e in args.append_output_entries] == [
        (True, ""), (False, "on CPU %evt.cpu")]
    assert args.rule_selections == [(False, "rule", "alpha")]
    assert args.http_addr == agent_args(["-o", "webserver.listen_port=9999"]).http_addr
    assert agent_args(["-o", "webserver.enabled=true"]).http_addr == "0.0.0.0:8765"  # Falco's
    assert agent_args(["-o", "webserver.enabled=false"]).http_addr == "off"
    # a flag still beats the file and -o
    assert agent_args([*argv, "--http-addr", "127.0.0.1:1"]).http_addr == "127.0.0.1:1"


@pytest.mark.parametrize(("option", "message"), [
    ("webserver.listen_port=high", "-o:1:1: 'webserver.listen_port=high': "
                                   "webserver.listen_port must be an integer"),
    ("json_output", "-o:1:1: 'json_output': not KEY=VALUE"),
    ("webserver..listen_port=1", "-o:1:11: 'webserver..listen_port=1': empty name"),
    ("rules_files[x]=a", "-o:1:13: 'rules_files[x]=a': expected a number or nothing"),
    ("webserver.listen_prot=1", "did you mean 'listen_port'?"),
])
def test_a_bad_o_is_a_usage_error_that_names_it(option: str, message: str) -> None:
    res = run_cli("-o", option, "-L")
    assert res.code == 2
    assert message in res.stderr


@pytest.mark.parametrize(("text", "where", "message"), [
    ("rules_file:\n  - /x.yaml\n", "1:1", "unknown key 'rules_file' in the config file; "
                                         "did you mean 'rules_files'?"),
    ("webserver:\n  enabled: true\n  listen_prot: 8765\n", "3:3",
     "unknown key 'listen_prot' in webserver; did you mean 'listen_port'?"),
    ("syscall_event_drops:\n  actions: [log, shout]\n", "2:18",
     "syscall_event_drops.actions[1] must be one of ignore, log, alert, exit"),
    ("rule_matching: some\n", "1:16", "rule_matching must be one of first, all"),
    ("append_output:\n  - match: {priority: loud}\n", "1:1", "append_output"),
])
def test_a_falco_key_misspelt_is_located_with_a_suggestion(
        tmp_path: Path, text: str, where: str, message: str) -> None:
    config = tmp_path / "falco.yaml"
    config.write_text(text)
    res = run_cli("-c", config, "-L")
    assert res.code == 2, res.stderr
    assert message in res.stderr
    if where != "1:1":
        assert f"{config}:{where}: {message}" in res.stderr


def test_env_expansion_and_config_files_as_falco(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("I18_PORT", "7777")
    monkeypatch.delenv("I18_UNSET", raising=False)
    a, b, c = (rule_file(tmp_path, n) for n in ("alpha", "beta", "gamma"))
    extra = tmp_path / "config.d"
    extra.mkdir()
    (extra / "20-more.yaml").write_text(f"rules_files: [{c}]\njson_output: true\n")
    (extra / "10-first.yaml").write_text(f"rules_files: [{b}]\n")
    only = tmp_path / "only.yaml"
    only.write_text("json_output: false\nstatic_fields: {cluster: c1}\n")
    main = tmp_path / "falco.yaml"
    main.write_text(f"config_files:\n  - {extra}\n  - path: {only}\n    strategy: add-only\n"
                    f"rules_files: [{a}]\nwebserver:\n  listen_port: ${{I18_PORT}}\n"
                    "  listen_address: 127.0.0.1${I18_UNSET}\n"
                    "static_fields:\n  literal: $${NOT_EXPANDED}\n")
    args = agent_args(["-c", str(main)])
    assert args.rules == [str(a), str(b), str(c)]  # append strategy, files in name order
    assert args.format == "json"                   # add-only kept the earlier json_output
    assert args.http_addr == "127.0.0.1:7777"
    assert args.extra_field == ["literal=${NOT_EXPANDED}"]


def test_validate_describe_and_list_flags(tmp_path: Path) -> None:
    a = rule_file(tmp_path, "alpha", priority="ERROR", tag="net")
    res = run_cli("-V", a)
    assert (res.code, res.stdout) == (0, "1 rules, 0 macros, 0 lists\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- rule: x\n  desc: d\n  condition: evt.type = \n  output: o\n"
                   "  priority: INFO\n")
    res = run_cli("-V", a, "-V", bad)
    assert res.code == 1 and res.stdout.startswith(f"{bad}:3:")
    res = run_cli("-r", a, "-l", "alpha")
    assert res.stdout == "alpha\n    the alpha rule\n"
    res = run_cli("-r", a, "-l", "alpha", "-o", "json_output=true")
    [rule] = json.loads(res.stdout)["rules"]
    assert (rule["name"], rule["priority"], rule["tags"]) == ("alpha", "Error", ["net"])
    res = run_cli("-r", a, "-l", "nope")
    assert res.code == 1 and "no rule named 'nope'" in res.stderr
    res = run_cli("--list")
    assert res.code == 0 and any(line.startswith("proc.name ") for line in
                                 res.stdout.splitlines())


def test_json_shape_keys_are_applied_not_warned() -> None:
    args = agent_args(["-c", str(FALCO_YAML), "-o", "json_include_tags_property=false",
                       "-o", "json_include_message_property=true",
                       "-o", "json_include_output_property=false",
                       "-o", "json_include_output_fields_property=false",
                       "-o", "time_format_iso_8601=true"])
    assert args.alert_shape == AlertShape(output=False, output_fields=False, tags=False,
                                          message=True, iso8601=True)
    assert agent_args(["-c", str(FALCO_YAML)]).alert_shape == AlertShape()
    res = run_cli("-o", "json_include_tags_property=false", "-o", "time_format_iso_8601=true",
                  "--list")
    assert res.code == 0 and "not applied" not in res.stderr


def test_unbuffered_and_stop_after_parse() -> None:
    args = agent_args(["-U", "-M", "30"])
    assert args.unbuffered is True and args.stop_after == 30.0
    assert agent_args(["-M", "2m"]).stop_after == 120.0


@pytest.mark.parametrize(("engine", "cpus", "mib"), [
    ("{kind: modern_ebpf, modern_ebpf: {buf_size_preset: 1, cpus_for_each_buffer: 0}}", 8, 1),
    ("{kind: modern_ebpf, modern_ebpf: {buf_size_preset: 4}}", 2, 8),   # Falco's defaults
    ("{kind: modern_ebpf, modern_ebpf: {buf_size_preset: 4}}", 8, 32),  # 4 buffers of 8
    ("{kind: modern_ebpf, modern_ebpf: {buf_size_preset: 3, cpus_for_each_buffer: 2}}",
     5, 16),                                               # 3 buffers of 4: rounded up
    ("{kind: kmod, kmod: {buf_size_preset: 2}}", 4, 8),    # kmod: a buffer per CPU
    ("{modern_ebpf: {buf_size_preset: 10, cpus_for_each_buffer: 1}}", 64, 512),  # at most
])
def test_engine_block_sizes_the_one_ring_as_falcos_buffers_together(
        engine: str, cpus: int, mib: int) -> None:
    from enforcer.config.ring_buffer import engine_ring_bytes  # noqa: PLC0415

    warned: list[str] = []
    assert engine_ring_bytes(yaml.safe_load(engine), warned.append, cpus) == mib << 20
    assert ("kmod" in engine) == bool(warned)


def test_buf_size_preset_sets_the_agents_ring_and_is_checked(tmp_path: Path) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    assert agent_args([]).ringbuf_pages is None  # ProbeConfig's own 16 MiB
    one = agent_args(["-o", "engine.modern_ebpf.buf_size_preset=1",
                      "-o", "engine.modern_ebpf.cpus_for_each_buffer=0"])
    assert one.ringbuf_pages * page == 1 << 20
    config = tmp_path / "falco.yaml"
    config.write_text("engine:\n  kind: modern_ebpf\n  modern_ebpf:\n"
                      "    buf_size_preset: 0\n")
    res = run_cli("-c", config, "-V", REPO / "policies" / "rules")
    assert res.code == 2, res.stderr
    assert f"{config}:4:22: engine.modern_ebpf.buf_size_preset must be a buf_size_preset " \
           "from 1 to 10" in res.stderr
    config.write_text("engine:\n  kind: modern_ebpf\n  modern_ebpf:\n"
                      "    buf_size_presets: 2\n")
    res = run_cli("-c", config, "-V", REPO / "policies" / "rules")
    assert res.code == 2 and f"{config}:4:5: unknown key 'buf_size_presets'" in res.stderr \
        and "did you mean 'buf_size_preset'?" in res.stderr, res.stderr
