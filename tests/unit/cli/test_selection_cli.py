"""Rule selection and output options of `enforcer replay` (and the live agent, which shares
enforcer.cli.selection_args): Falco's `priority`, `rules:` enable/disable, `rule_matching`
and `append_output`, run as a user would."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from enforcer.cli.selection_args import add_selection_arguments, build_engine
from tests.unit.clirun import run_cli, write_events
from tests.unit.rules.helpers import load, rule_yaml

RULES = (rule_yaml("evt.type = open and proc.name = cat", name="cat opens", priority="ERROR",
                   output="cat opened %fd.name", extra="  tags: [files, cat]\n")
         + rule_yaml("evt.type = open", name="any open", priority="NOTICE",
                     output="opened %fd.name", extra="  tags: [files]\n")
         + rule_yaml("evt.type = open", name="quiet open", priority="DEBUG", output="quiet",
                     extra="  tags: [noisy]\n  enabled: false\n"))
EVENT = {"evt.type": "open", "proc.name": "cat", "fd.name": "/etc/shadow", "proc.pid": 7}


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return rules, write_events(tmp_path / "ev.jsonl", [EVENT])


def replay(files, *options: str):
    rules, events = files
    res = run_cli("replay", events, "--rules", rules, "--hostname", "h", *options)
    return res, [a["rule"] for a in res.alerts()] if res.code == 0 else None


def test_defaults_report_every_enabled_match(files):
    res, rules = replay(files)
    assert res.code == 0 and rules == ["cat opens", "any open"]


def test_rule_matching_first(files):
    assert replay(files, "--rule-matching", "first")[1] == ["cat opens"]
    assert replay(files, "--rule-matching", "all")[1] == ["cat opens", "any open"]
    res, _ = replay(files, "--rule-matching", "some")
    assert res.code == 2 and "--rule-matching" in res.stderr


def test_min_priority_drops_less_severe_rules(files):
    assert replay(files, "--min-priority", "error")[1] == ["cat opens"]
    assert replay(files, "--min-priority", "Warning")[1] == ["cat opens"]
    assert replay(files, "--min-priority", "notice")[1] == ["cat opens", "any open"]
    # an enabled rule below the minimum stays off, as in Falco
    assert replay(files, "--enable-tag", "noisy", "--min-priority", "info")[1] == [
        "cat opens", "any open"]
    assert replay(files, "--enable-tag", "noisy", "--min-priority", "debug")[1] == [
        "cat opens", "any open", "quiet open"]
    res, _ = replay(files, "--min-priority", "LOW")
    assert res.code == 2 and "Invalid priority 'LOW'" in res.stderr


def test_enable_and_disable_by_rule_and_tag(files):
    assert replay(files, "--disable-rule", "cat opens")[1] == ["any open"]
    assert replay(files, "--disable-rule", "*open*")[1] == []
    assert replay(files, "--disable-rule", "cat")[1] == ["cat opens", "any open"]  # exact
    assert replay(files, "--disable-tag", "files")[1] == []
    assert replay(files, "--disable-tag", "cat")[1] == ["any open"]
    assert replay(files, "--enable-rule", "quiet*")[1] == ["cat opens", "any open",
                                                           "quiet open"]
    assert replay(files, "--enable-tag", "noisy")[1] == ["cat opens", "any open", "quiet open"]


def test_selections_apply_in_the_order_given(files):
    assert replay(files, "--disable-tag", "files", "--enable-rule", "any open")[1] == [
        "any open"]
    assert replay(files, "--enable-rule", "any open", "--disable-tag", "files")[1] == []
    assert replay(files, "--disable-rule", "*", "--enable-tag", "noisy",
                  "--enable-rule", "cat opens")[1] == ["cat opens", "quiet open"]


def test_append_output_file(files, tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("append_output:\n"
                     "  - match: {tags: [files, cat]}\n"
                     "    extra_output: \"pid=%proc.pid\"\n"
                     "    extra_fields:\n"
                     "      - who: \"%proc.name\"\n"
                     "  - extra_output: \"(enforcer)\"\n")
    res, rules = replay(files, "--append-output", extra)
    assert res.code == 0, res.stderr
    alerts = {a["rule"]: a for a in res.alerts()}
    assert alerts["cat opens"]["output"].endswith(
        ": Error cat opened /etc/shadow pid=7 (enforcer)")
    assert alerts["cat opens"]["output_fields"]["who"] == "cat"
    assert alerts["cat opens"]["output_fields"]["proc.pid"] == 7
    assert alerts["any open"]["output"].endswith(": Notice opened /etc/shadow (enforcer)")
    assert "who" not in alerts["any open"]["output_fields"]


def test_append_output_file_with_an_unknown_field(files, tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("append_output:\n  - extra_output: \"x=%proc.nope\"\n")
    res, _ = replay(files, "--append-output", extra)
    assert res.code == 1 and res.stdout == ""
    assert f"{extra}:2:22: extra_output: invalid formatting token %proc.nope" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_append_output_file(files, tmp_path):
    res, _ = replay(files, "--append-output", tmp_path / "nope.yaml")
    assert res.code == 1 and f"{tmp_path / 'nope.yaml'}:1:1: cannot read" in res.stderr


def test_the_agent_parser_gets_the_same_options(tmp_path):
    """The live agent adds these options to its own parser and builds its engine with
    build_engine, as replay does."""
    parser = argparse.ArgumentParser()
    add_selection_arguments(parser)
    extra = tmp_path / "extra.yaml"
    extra.write_text("append_output:\n  - extra_output: \"pid=%proc.pid\"\n")
    args = parser.parse_args(["--rule-matching", "first", "--append-output", str(extra),
                              "--disable-rule", "cat opens", "--min-priority", "notice"])
    engine = build_engine(load(RULES), args, "")
    assert [a.output for a in engine.evaluate(EVENT)] == ["opened /etc/shadow pid=7"]
    defaults = parser.parse_args([])
    engine = build_engine(load(RULES), defaults, "")
    assert [a.rule for a in engine.evaluate(EVENT)] == ["cat opens", "any open"]
    assert json.dumps(vars(defaults), default=str)  # plain values only


def test_suggested_output_is_on_by_default_as_in_falcos_shipped_config(files, tmp_path):
    res, _ = replay(files)
    assert res.code == 0, res.stderr
    alert = {a["rule"]: a for a in res.alerts()}["cat opens"]
    assert alert["output"].endswith(
        "cat opened /etc/shadow container_id=<NA> container_name=<NA> "
        "container_image_repository=<NA> container_image_tag=<NA> k8s_pod_name=<NA> "
        "k8s_ns_name=<NA>")
    assert "container.name" in alert["output_fields"]
    off = tmp_path / "off.yaml"
    off.write_text("append_output: []\n")
    res, _ = replay(files, "--append-output", off)
    alert = {a["rule"]: a for a in res.alerts()}["cat opens"]
    assert alert["output"].endswith("cat opened /etc/shadow")
    assert "container.name" not in alert["output_fields"]


def test_a_falco_yaml_append_output_even_empty_replaces_the_default():
    import argparse  # noqa: PLC0415

    from enforcer.cli.selection_args import engine_options_from_args  # noqa: PLC0415
    from enforcer.rules.append_output import DEFAULT_APPEND_OUTPUT  # noqa: PLC0415

    assert engine_options_from_args(argparse.Namespace())["append_output"] == list(
        DEFAULT_APPEND_OUTPUT)
    off = argparse.Namespace(append_output_entries=[])
    assert engine_options_from_args(off)["append_output"] == []
