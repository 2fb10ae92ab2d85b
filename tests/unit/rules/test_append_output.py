"""Falco's `append_output` (§89, §90): extra output text and fields for the rules each
entry matches, by rule name, source and (all of the) tags, in configuration order."""

from __future__ import annotations

import textwrap

import pytest

from enforcer.errors import RuleError
from enforcer.rules.append_output import parse_append_output
from enforcer.rules.engine import Engine

from .helpers import load, rule_yaml

RULES = (rule_yaml("evt.type = open", name="legit_rule", output="out 1",
                   extra="  tags: [a, b, c]\n")
         + rule_yaml("evt.type = open", name="another_rule", output="out 2",
                     extra="  tags: [a]\n"))
EVENT = {"evt.type": "open", "proc.name": "cat", "proc.pid": 42, "fd.name": "/etc/shadow"}


def outputs(config: str, rules: str = RULES, event: dict | None = None) -> dict[str, object]:
    entries = parse_append_output(textwrap.dedent(config), "extra.yaml")
    engine = Engine(load(rules), hostname="t", append_output=entries)
    return {a.rule: a for a in engine.evaluate(event or EVENT)}


def texts(config: str) -> dict[str, str]:
    return {name: a.output for name, a in outputs(config).items()}


def test_appended_to_every_rule_with_one_space():
    assert texts("""
        append_output:
          - extra_output: "evt.type=%evt.type"
        """) == {"legit_rule": "out 1 evt.type=open", "another_rule": "out 2 evt.type=open"}


def test_restricted_by_rule_name():
    assert texts("""
        append_output:
          - match: {rule: legit_rule}
            extra_output: "proc=%proc.name"
        """) == {"legit_rule": "out 1 proc=cat", "another_rule": "out 2"}


def test_tag_filter_needs_all_the_tags():
    assert texts("""
        append_output:
          - match: {tags: [a, b]}
            extra_output: "ab"
          - match: {tags: [a]}
            extra_output: "a"
          - match: {tags: [a, z]}
            extra_output: "az"
        """) == {"legit_rule": "out 1 ab a", "another_rule": "out 2 a"}


def test_restricted_by_source_and_combined_filters():
    assert texts("""
        append_output:
          - match: {source: k8s_audit}
            extra_output: "audit"
          - match: {source: syscall, tags: [c], rule: legit_rule}
            extra_output: "sys"
          - match: {source: syscall, rule: another_rule, tags: [c]}
            extra_output: "never"
        """) == {"legit_rule": "out 1 sys", "another_rule": "out 2"}


def test_several_entries_in_configuration_order():
    assert texts("""
        append_output:
          - extra_output: "one=%proc.pid"
          - match: {rule: another_rule}
            extra_output: "two"
          - extra_output: "three=%fd.name"
        """) == {"legit_rule": "out 1 one=42 three=/etc/shadow",
                 "another_rule": "out 2 one=42 two three=/etc/shadow"}


def test_extra_fields_formatted_and_raw():
    alerts = outputs("""
        append_output:
          - match: {rule: legit_rule}
            extra_fields:
              - file: "name=%fd.name"
              - proc.pid
              - missing: "%container.id"
              - user.uid
        """)
    fields = alerts["legit_rule"].output_fields
    assert fields["file"] == "name=/etc/shadow"
    assert fields["proc.pid"] == 42  # raw: the value keeps its type
    assert fields["missing"] == "<NA>"
    assert fields["user.uid"] is None
    assert alerts["legit_rule"].output == "out 1"  # extra_fields leave the text alone
    assert "file" not in alerts["another_rule"].output_fields


def test_extra_output_fields_join_output_fields():
    alerts = outputs("""
        append_output:
          - extra_output: "by %proc.name"
        """)
    assert alerts["legit_rule"].output_fields["proc.name"] == "cat"


def test_no_entries_leaves_outputs_unchanged():
    assert texts("append_output: []\n") == {"legit_rule": "out 1", "another_rule": "out 2"}


def errors(config: str) -> list[str]:
    with pytest.raises(RuleError) as exc:
        parse_append_output(textwrap.dedent(config).lstrip("\n"), "extra.yaml")
    return [str(d) for d in exc.value.diagnostics]


def test_unknown_field_in_extra_output_is_located():
    [err] = errors("""
        append_output:
          - extra_output: "a=%nope.field"
        """)
    assert err.startswith("extra.yaml:2:22: extra_output: invalid formatting token "
                          "%nope.field: nonexistent field 'nope.field'")


def test_unknown_fields_in_extra_fields_are_located():
    found = errors("""
        append_output:
          - extra_fields:
              - k: "x %nope.one"
              - nope.two
              - proc.name
              - proc.name
        """)
    assert [e.split(": ")[0] for e in found] == ["extra.yaml:3:15", "extra.yaml:4:9",
                                                 "extra.yaml:6:9"]
    assert "nonexistent field 'nope.one'" in found[0]
    assert "nonexistent field 'nope.two'" in found[1]
    assert "defined twice" in found[2]


@pytest.mark.parametrize("config, where, why", [
    ("append_output:\n  - extra_outputs: x\n", "2:5", "unknown key 'extra_outputs'"),
    ("append_output:\n  - match: {rules: x}\n", "2:13", "unknown key 'rules' in match"),
    ("append_output:\n  - match: {tags: a}\n", "2:19", "match.tags must be a list"),
    ("append_output:\n  - extra_fields: x\n", "2:19", "extra_fields must be a list"),
    ("append_output: {}\n", "1:16", "must be a list"),
    ("rules: []\n", "1:1", "unknown key 'rules'"),
    ("append_output: [\n", "2:1", "invalid YAML"),
])
def test_malformed_files(config, where, why):
    found = errors(config)
    assert any(e.startswith(f"extra.yaml:{where}: ") and why in e for e in found), found


SUGGESTED = ("container_id=%container.id container_name=%container.name "
             "container_image_repository=%container.image.repository "
             "container_image_tag=%container.image.tag k8s_pod_name=%k8s.pod.name "
             "k8s_ns_name=%k8s.ns.name")
POD_EVENT = {**EVENT, "container.id": "0123456789ab", "container.name": "web",
             "container.image.repository": "docker.io/library/nginx",
             "container.image.tag": "1.27", "k8s.pod.name": "web-1", "k8s.ns.name": "shop"}


def test_suggested_output_appends_the_container_plugins_fields_in_falcos_form():
    got = outputs("""
        append_output:
          - suggested_output: true
        """, event=POD_EVENT)["legit_rule"]
    assert got.output == ("out 1 container_id=0123456789ab container_name=web "
                          "container_image_repository=docker.io/library/nginx "
                          "container_image_tag=1.27 k8s_pod_name=web-1 k8s_ns_name=shop")
    assert {k: got.output_fields[k] for k in ("container.id", "container.name",
                                              "k8s.pod.name", "k8s.ns.name")} == {
        "container.id": "0123456789ab", "container.name": "web", "k8s.pod.name": "web-1",
        "k8s.ns.name": "shop"}


def test_suggested_fields_follow_the_entrys_extra_output_and_repeat_the_rules_own():
    rules = rule_yaml("evt.type = open", name="r", output="in %container.name")
    got = outputs("""
        append_output:
          - extra_output: "x"
            suggested_output: true
        """, rules=rules, event={**EVENT, "container.id": "host", "container.name": "host"})
    # as Falco: appended even though the rule's output already has container.name
    assert got["r"].output.startswith("in host x container_id=host container_name=host ")
    assert got["r"].output.endswith(" k8s_pod_name=<NA> k8s_ns_name=<NA>")


def test_suggested_output_false_appends_nothing():
    assert texts("""
        append_output:
          - suggested_output: false
        """) == {"legit_rule": "out 1", "another_rule": "out 2"}


def test_suggested_output_must_be_a_boolean():
    with pytest.raises(RuleError) as exc:
        parse_append_output("append_output:\n  - suggested_output: yes please\n", "x.yaml")
    assert str(exc.value.diagnostics[0]).startswith("x.yaml:2:23: suggested_output must be")
