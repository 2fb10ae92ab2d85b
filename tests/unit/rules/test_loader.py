"""Loader behaviours (upstream_tests.md §1-6, §10): structure, lists and macros, append and
override, exceptions, enabled, priorities, outputs; errors located at FILE:LINE:COL."""

from __future__ import annotations

import textwrap

import pytest

from enforcer.errors import RuleError
from enforcer.priority import Priority
from enforcer.rules.engine import Engine

from .helpers import load

RULE = """\
- rule: r
  desc: d
  condition: evt.type = execve and proc.name = cat
  output: "o %proc.name"
  priority: INFO
"""


def errors(text: str) -> list[str]:
    with pytest.raises(RuleError) as err:
        load(text)
    return [str(d) for d in err.value.diagnostics]


def warnings(text: str) -> list[str]:
    return [d.message for d in load(text).warnings]


def cond(ruleset, name="r") -> str:
    return str(ruleset.rules[name].expr)


def fires(ruleset, event) -> list[str]:
    return [a.rule for a in Engine(ruleset, hostname="h").evaluate(event)]


EXEC_CAT = {"evt.type": "execve", "proc.name": "cat"}

# -- 1. structure ----------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("a: b\n", "not yaml array of objects"),
    ("just text\n", "not yaml"),
    ("- [unclosed\n", "invalid YAML"),
    ("- just a string\n", "should be a yaml associative array"),
    ("- rule: r\n  desc: d\n  output: o\n  priority: INFO\n", "no mapping for key 'condition'"),
    ("- rule: r\n  desc: d\n  condition: evt.type=open\n  priority: INFO\n",
     "no mapping for key 'output'"),
    ("- rule: r\n  condition: evt.type=open\n  output: o\n  priority: INFO\n",
     "no mapping for key 'desc'"),
    ("- rule: r\n  desc: d\n  condition: evt.type=open\n  output: o\n",
     "no mapping for key 'priority'"),
    ("- rule: r\n  desc: d\n  condition: evt.type=open\n  output:\n  priority: INFO\n",
     "Mapping for key 'output' is empty"),
    ("- rule: r\n  desc: d\n  condition: evt.type=open\n  output: ''\n  priority: INFO\n",
     "must be non-empty"),
    (RULE.replace("INFO", "LOW"), "Invalid priority"),
    (RULE + "  capture_duration: abc\n", "as an integer"),
    (RULE + "  tags: notalist\n", "is not a sequence"),
    (RULE + "  tags: [[a]]\n", "not scalar"),
    ("- list: l\n  items: notalist\n", "is not a sequence"),
    ("- required_engine_version: seven\n", "Unable to parse engine version"),
    ("- required_engine_version: 99.0.0\n", "Rules require engine version 99.0.0"),
    ("- required_plugin_versions: notalist\n", "must be a sequence"),
    ("- required_plugin_versions:\n  - name: x\n", "no mapping for key 'version'"),
    ("- required_plugin_versions:\n  - name: x\n    version: one\n", "Invalid plugin version"),
    ("- required_plugin_versions:\n  - name: x\n    version: 1.0.0\n    alternatives:\n"
     "    - {name: y, version: 1.0.0}\n    - {name: y, version: 2.0.0}\n",
     "listed more than once"),
])
def test_structure_errors(text, message):
    assert any(message in e for e in errors(text)), errors(text)


def test_empty_and_null_content_loads():
    assert load("").counts()["rules"] == 0
    assert load("---\n...\n").counts()["rules"] == 0
    assert load("- \n" + RULE).counts()["rules"] == 1


def test_every_document_is_read():
    rs = load(RULE + "---\n" + RULE.replace("rule: r", "rule: s"))
    assert list(rs.rules) == ["r", "s"]


@pytest.mark.parametrize("text, message", [
    ("- exception_group: foo\n" + RULE, "Unknown top level item"),
    ("- macro: is_exec\n  condition: evt.type = execve\n  severity: high\n",
     "Unknown key 'severity'"),
    ("- list: l\n  items: [a]\n  priority: INFO\n", "Unknown key 'priority'"),
    ("- list: my list\n  items: [a]\n", "List has an invalid name"),
    ("- macro: is-exec\n  condition: evt.type = execve\n", "Macro has an invalid name"),
    ("- macro: unused\n  condition: evt.type = execve\n",
     "Macro not referred to by any other rule/macro"),
    ("- list: unused\n  items: [a]\n", "List not referred to by any other rule/macro"),
    (RULE.replace("evt.type = execve and ", ""), "too many evt.type values"),
    (RULE + "  source: k8s_audit\n", "Unknown source k8s_audit, skipping"),
    (RULE.replace('"o %proc.name"', '"o %container.info x"'), "container.info is deprecated"),
    (RULE.replace('"o %proc.name"', '"o %evt.dir"'), "deprecated field 'evt.dir'"),
])
def test_warnings(text, message):
    assert any(message in w for w in warnings(text)), warnings(text)


def test_no_warnings_for_a_clean_rule():
    assert warnings(RULE) == []
    assert warnings(RULE.replace("evt.type = execve and ", "") +
                    "  warn_evttypes: false\n") == []


def test_unknown_source_rule_is_skipped():
    rs = load(RULE + "  source: k8s_audit\n")
    assert "r" not in rs.rules and "r" in rs.skipped


def test_unknown_key_is_ignored():
    rs = load(RULE + "  severity: high\n")
    assert rs.rules["r"].priority == Priority.INFORMATIONAL


def test_defaults_and_output_trimmed():
    r = load(RULE.replace('"o %proc.name"', '"  o %proc.name  "')).rules["r"]
    assert (r.enabled, r.source, r.tags, r.exceptions, r.output) == \
        (True, "syscall", (), (), "o %proc.name")
    assert (r.capture, r.capture_duration, r.warn_evttypes, r.skip_if_unknown_filter) == \
        (False, 0, True, False)


def test_optional_keys_load_without_warning():
    extra = ("  warn_evttypes: true\n  skip-if-unknown-filter: false\n  capture: yes\n"
             "  capture_duration: 100\n  tags: [a, 'b c']\n  exceptions: []\n"
             "  source: syscall\n  enabled: true\n")
    rs = load(RULE + extra)
    assert warnings(RULE + extra) == []
    assert rs.rules["r"].capture is True and rs.rules["r"].tags == ("a", "b c")


def test_engine_version_forms():
    assert load("- required_engine_version: 0.26.0\n" + RULE).required_engine_version \
        == "0.26.0"
    assert load("- required_engine_version: 26\n" + RULE).counts()["rules"] == 1
    assert load("- required_engine_version: 0.57.0\n").counts()["rules"] == 0


def test_full_redefinition_replaces():
    rs = load(RULE.replace("INFO", "INFO\n  enabled: false") +
              RULE.replace("proc.name = cat", "proc.name = ls").replace("INFO", "WARNING"))
    assert rs.counts()["rules"] == 1
    r = rs.rules["r"]
    assert r.enabled and r.priority == Priority.WARNING and "ls" in r.condition


def test_different_source_redefinition_is_an_error():
    text = RULE + RULE + "  source: k8s_audit\n"
    assert any("different source" in e for e in errors(text))


def test_stops_at_first_error_in_a_file_but_reports_other_files(tmp_path):
    from enforcer.rules.loader import load_rules
    a = tmp_path / "a.yaml"
    a.write_text("- rule: x\n  desc: d\n  output: o\n  priority: INFO\n"
                 "- rule: y\n  desc: d\n  output: o\n  priority: INFO\n")
    b = tmp_path / "b.yaml"
    b.write_text("- list: l\n  items: oops\n")
    with pytest.raises(RuleError) as err:
        load_rules([a, b])
    found = [(d.file, d.line) for d in err.value.diagnostics]
    assert found == [(str(a), 1), (str(b), 2)]


def test_error_position_points_into_the_condition():
    text = textwrap.dedent("""\
        - rule: r
          desc: d
          condition: >
            evt.type = execve and
            proc.name resembles cat
          output: o
          priority: INFO
        """)
    with pytest.raises(RuleError) as err:
        load(text)
    d = err.value.diagnostics[0]
    assert (d.file, d.line, d.column) == ("test.yaml", 5, 15)
    assert "expecting" in d.message


def test_unknown_field_error_position():
    text = "- rule: r\n  desc: d\n  condition: evt.type = open and proc.colour = red\n" \
           "  output: o\n  priority: INFO\n"
    with pytest.raises(RuleError) as err:
        load(text)
    d = err.value.diagnostics[0]
    assert (d.line, d.column) == (3, 34) and "proc.colour" in d.message


def test_all_errors_are_collected():
    text = (RULE.replace("rule: r", "rule: a").replace("proc.name = cat", "proc.x = 1") +
            RULE.replace("rule: r", "rule: b").replace("proc.name = cat", "proc.name ="))
    assert len(errors(text)) == 2


# -- 2. lists and macros ---------------------------------------------------------------

def test_list_expansion():
    rs = load("- list: editors\n  items: [vi, nano]\n" +
              RULE.replace("proc.name = cat", "proc.name in (editors, emacs)"))
    assert cond(rs) == "(evt.type = execve and proc.name in (vi, nano, emacs))"


def test_list_name_only_as_whole_token():
    rs = load("- list: editors\n  items: [vi]\n" +
              RULE.replace("proc.name = cat", "(proc.name in (editors) or proc.name in "
                           "(editors_extra) or fd.name = /editors/)"))
    assert "editors_extra" in cond(rs) and "/editors/" in cond(rs)
    assert "(vi)" in cond(rs)


def test_empty_list_drops_a_comma():
    rs = load("- list: empty_l\n  items: []\n" +
              RULE.replace("proc.name = cat", "proc.name in (empty_l, bash)") +
              RULE.replace("rule: r", "rule: s").replace("proc.name = cat",
                                                        "proc.name in (empty_l)"))
    assert cond(rs).endswith("proc.name in (bash))")
    assert cond(rs, "s").endswith("proc.name in ())")
    assert fires(rs, {"evt.type": "execve", "proc.name": "bash"}) == ["r"]


def test_undefined_list_name_is_a_literal():
    rs = load(RULE.replace("proc.name = cat", "proc.name in (undefined_thing)"))
    assert fires(rs, {"evt.type": "execve", "proc.name": "undefined_thing"}) == ["r"]


def test_lists_include_earlier_lists_only():
    rs = load("- list: a\n  items: [x]\n- list: b\n  items: [a, y]\n"
              "- list: c\n  items: [d, z]\n- list: d\n  items: [w]\n" +
              RULE.replace("proc.name = cat", "proc.name in (b, c)"))
    assert rs.lists["b"].items == ("x", "y")
    assert rs.lists["c"].items == ("d", "z")


def test_rule_may_use_a_list_defined_later():
    rs = load(RULE.replace("proc.name = cat", "proc.name in (later)") +
              "- list: later\n  items: [cat]\n")
    assert fires(rs, EXEC_CAT) == ["r"]


def test_quoted_list_items_keep_spaces():
    rs = load("- list: l\n  items: [plain, \"two words\", '\"quoted x\"']\n" +
              RULE.replace("proc.name = cat", "proc.cmdline in (l)"))
    assert fires(rs, {"evt.type": "execve", "proc.cmdline": "two words"}) == ["r"]
    assert fires(rs, {"evt.type": "execve", "proc.cmdline": "quoted x"}) == ["r"]


def test_macro_expansion_and_negation():
    rs = load("- macro: is_shell\n  condition: proc.name in (bash, sh)\n" +
              RULE.replace("proc.name = cat", "not is_shell"))
    assert cond(rs) == "(evt.type = execve and not (proc.name in (bash, sh)))"
    assert fires(rs, {"evt.type": "execve", "proc.name": "cat"}) == ["r"]
    assert fires(rs, {"evt.type": "execve", "proc.name": "sh"}) == []


def test_macro_body_is_one_unit():
    rs = load("- macro: m\n  condition: proc.name = a or proc.name = b\n" +
              RULE.replace("proc.name = cat", "m"))
    assert fires(rs, {"evt.type": "open", "proc.name": "b"}) == []


def test_nested_macros_and_rules_see_later_macros():
    rs = load(RULE.replace("proc.name = cat", "outer") +
              "- macro: inner\n  condition: proc.name = cat\n"
              "- macro: outer\n  condition: inner\n")
    assert fires(rs, EXEC_CAT) == ["r"]


def test_macro_cannot_use_a_later_macro():
    text = ("- macro: outer\n  condition: inner\n"
            "- macro: inner\n  condition: proc.name = cat\n" +
            RULE.replace("proc.name = cat", "outer"))
    assert any("Undefined macro 'inner'" in e for e in errors(text))


def test_macro_sees_macros_defined_before_its_latest_append():
    text = ("- macro: outer\n  condition: proc.name = x\n"
            "- macro: inner\n  condition: proc.name = cat\n"
            "- macro: outer\n  condition: or inner\n  override:\n    condition: append\n" +
            RULE.replace("proc.name = cat", "outer"))
    assert fires(load(text), EXEC_CAT) == ["r"]


def test_undefined_macro_in_rule_is_located():
    with pytest.raises(RuleError) as err:
        load(RULE.replace("proc.name = cat", "nosuchmacro"))
    d = err.value.diagnostics[0]
    assert "Undefined macro 'nosuchmacro' used in filter." in d.message
    assert (d.line, d.column) == (3, 36)


def test_syntax_error_in_unused_macro_is_an_error():
    assert any("macro 'bad'" in e for e in errors("- macro: bad\n  condition: a.b = \n"))


def test_keyword_prefixed_macro_names():
    rs = load("- macro: notz\n  condition: proc.name = cat\n"
              "- macro: and_macro\n  condition: evt.type = execve\n" +
              RULE.replace("evt.type = execve and proc.name = cat", "and_macro and notz"))
    assert fires(rs, EXEC_CAT) == ["r"]


def test_never_true_placeholder_macro():
    rs = load("- macro: never_true\n  condition: (evt.num=0)\n" +
              RULE.replace("proc.name = cat", "not never_true"))
    assert rs.rules["r"].enabled and not rs.warnings


# -- 3. append and override ------------------------------------------------------------

def test_list_override_append():
    text = ("- list: shells\n  items: [ash, bash]\n"
            "- list: shells\n  items: [zsh]\n  override:\n    items: append\n" +
            RULE.replace("proc.name = cat", "proc.name in (shells)"))
    rs = load(text)
    assert rs.lists["shells"].items == ("ash", "bash", "zsh")
    assert warnings(text) == []


def test_list_legacy_append_warns():
    text = ("- list: shells\n  items: [ash]\n- list: shells\n  items: [zsh]\n  append: true\n" +
            RULE.replace("proc.name = cat", "proc.name in (shells)"))
    assert load(text).lists["shells"].items == ("ash", "zsh")
    assert any("'append' key is deprecated" in w for w in warnings(text))


@pytest.mark.parametrize("text, message", [
    ("- list: l\n  items: [a]\n  override:\n    items: append\n", "no list by that name"),
    ("- list: l\n  items: [a]\n  append: true\n", "no list by that name"),
    ("- macro: m\n  condition: a.b=1\n  append: true\n", "no macro by that name"),
    (RULE.replace("INFO", "INFO\n  append: true"), "no rule by that name"),
])
def test_append_to_missing(text, message):
    assert any(message in e for e in errors(text))


def test_override_replace_of_missing_list_or_macro_defines_it():
    rs = load("- list: l\n  items: [cat]\n  override:\n    items: replace\n"
              "- macro: m\n  condition: proc.name in (l)\n  override:\n"
              "    condition: replace\n" + RULE.replace("proc.name = cat", "m"))
    assert fires(rs, EXEC_CAT) == ["r"]


def test_misspelt_override_is_an_unknown_key_and_a_redefinition():
    text = ("- list: l\n  items: [a]\n- list: l\n  items: [cat]\n  overide:\n"
            "    items: append\n" + RULE.replace("proc.name = cat", "proc.name in (l)"))
    assert load(text).lists["l"].items == ("cat",)
    assert any("Unknown key 'overide'" in w for w in warnings(text))


def test_macro_condition_append_joins_text():
    text = ("- macro: m\n  condition: evt.type in (open, openat)\n"
            "- macro: m\n  condition: or evt.type = openat2\n  override:\n"
            "    condition: append\n" + RULE.replace("evt.type = execve and proc.name = cat",
                                                     "m"))
    rs = load(text)
    assert cond(rs) == "((evt.type in (open, openat) or evt.type = openat2))"
    assert fires(rs, {"evt.type": "openat2"}) == ["r"]


def test_appended_text_keeps_precedence():
    text = RULE.replace("evt.type = execve and proc.name = cat",
                        "proc.name = a or proc.name = b") + \
        "- rule: r\n  condition: and proc.pid = 3\n  override:\n    condition: append\n"
    rs = load(text)
    assert fires(rs, {"evt.type": "x", "proc.name": "a"}) == ["r"]
    assert fires(rs, {"evt.type": "x", "proc.name": "b"}) == []


def test_rule_override_append_and_replace():
    text = RULE + textwrap.dedent("""\
        - rule: r
          condition: and proc.pid = 1
          output: extra=%proc.pid
          desc: more
          tags: [t2]
          priority: WARNING
          override: {condition: append, output: append, desc: append, tags: append,
                     priority: replace}
        """)
    r = load(text.replace("INFO\n", "INFO\n  tags: [t1]\n", 1)).rules["r"]
    assert r.output == "o %proc.name extra=%proc.pid"
    assert r.desc == "d more" and r.tags == ("t1", "t2")
    assert r.priority == Priority.WARNING and r.priority.display == "Warning"
    assert str(r.expr) == "(evt.type = execve and proc.name = cat and proc.pid = 1)"


def test_override_keeps_rule_position():
    text = RULE + RULE.replace("rule: r", "rule: s") + \
        "- rule: r\n  priority: ERROR\n  override:\n    priority: replace\n"
    assert list(load(text).rules) == ["r", "s"]


@pytest.mark.parametrize("override, message", [
    ("  priority: ERROR\n  override: {priority: append}\n", "cannot be appended to, use "
     "'replace' instead"),
    ("  source: syscall\n  override: {source: replace}\n", "Key 'source' cannot be replaced"),
    ("  condition: x.y = 1\n  override: {condition: merge}\n",
     "Invalid override operation for key 'condition'"),
    ("  override: {condition: append}\n", "An append override for 'condition' was specified "
     "but 'condition' is not defined"),
    ("  override: {enabled: replace}\n", "'enabled' is not defined"),
    ("  condition: and proc.pid = 1\n  priority: ERROR\n  override: {condition: append}\n",
     "Unexpected key 'priority'"),
    ("  condition: and proc.pid = 1\n  append: true\n  override: {condition: append}\n",
     "cannot be used together"),
])
def test_override_errors(override, message):
    assert any(message in e for e in errors(RULE + "- rule: r\n" + override)), \
        errors(RULE + "- rule: r\n" + override)


def test_override_of_missing_rule():
    e1 = errors("- rule: r\n  condition: x\n  override: {condition: append}\n")
    assert any("Rule uses 'append'" in e for e in e1)
    e2 = errors("- rule: r\n  enabled: true\n  override: {enabled: replace}\n")
    assert any("override.enabled: replace' to a rule was requested" in e for e in e2)


def test_legacy_rule_append():
    text = RULE.replace("INFO", "INFO\n  enabled: false") + \
        "- rule: r\n  condition: and proc.pid = 1\n  enabled: true\n  append: true\n"
    r = load(text).rules["r"]
    assert not r.enabled  # enabled in a legacy append is ignored
    assert "proc.pid = 1" in str(r.expr)
    assert any("Appended rule must have exceptions or condition" in e
               for e in errors(RULE + "- rule: r\n  append: true\n"))


def test_override_enabled_and_flags():
    text = RULE.replace("INFO", "INFO\n  enabled: false\n  capture: true") + \
        "- rule: r\n  enabled: true\n  capture: false\n  capture_duration: 15000\n" \
        "  warn_evttypes: false\n  tags: [x]\n" \
        "  override: {enabled: replace, capture: replace, capture_duration: replace, " \
        "warn_evttypes: replace, tags: replace}\n"
    r = load(text).rules["r"]
    assert (r.enabled, r.capture, r.capture_duration, r.warn_evttypes, r.tags) == \
        (True, False, 15000, False, ("x",))
    assert warnings(text) == []


def test_standalone_enabled():
    text = RULE.replace("INFO", "INFO\n  enabled: false") + "- rule: r\n  enabled: true\n"
    assert load(text).rules["r"].enabled
    assert any("standalone 'enabled'" in w for w in warnings(text))
    assert any("no rule by that name" in e for e in errors("- rule: zz\n  enabled: true\n"))


def test_same_source_override_with_empty_source_loads():
    text = RULE + "- rule: r\n  condition: and proc.pid = 1\n  source:\n" \
                  "  override: {condition: append}\n"
    assert load(text).rules["r"]


# -- 4. exceptions ---------------------------------------------------------------------

EXC_RULE = RULE.replace("INFO", "INFO\n  exceptions:\n")


def exc_rule(body: str) -> str:
    return EXC_RULE + textwrap.indent(textwrap.dedent(body), "    ")


def test_exception_tuples():
    rs = load(exc_rule("""\
        - name: trusted
          fields: [proc.pname, fd.directory]
          comps: [=, startswith]
          values:
            - [backup, /srv]
            - [rsync, /data]
        """))
    assert str(rs.rules["r"].expr) == (
        "((evt.type = execve and proc.name = cat) and not ((proc.pname = backup and "
        "fd.directory startswith /srv) or (proc.pname = rsync and fd.directory startswith "
        "/data)))")
    assert fires(rs, {**EXEC_CAT, "proc.pname": "backup", "fd.directory": "/srv/x"}) == []
    assert fires(rs, {**EXEC_CAT, "proc.pname": "backup", "fd.directory": "/x"}) == ["r"]


def test_exception_defaults():
    rs = load(exc_rule("""\
        - name: a
          fields: [proc.cmdline]
          values: [[wget -q]]
        - name: b
          fields: proc.pname
          values: [sshd, "my shell"]
        """))
    text = str(rs.rules["r"].expr)
    assert 'proc.cmdline = "wget -q"' in text
    assert 'proc.pname in (sshd, "my shell")' in text
    assert fires(rs, {**EXEC_CAT, "proc.pname": "my shell"}) == []


def test_exception_list_values_and_scalar_list_ops():
    rs = load(exc_rule("""\
        - name: a
          fields: [proc.pname, fd.name]
          comps: [in, pmatch]
          values:
            - [[bash, sh], /tmp]
        """))
    text = str(rs.rules["r"].expr)
    assert "proc.pname in (bash, sh) and fd.name pmatch (/tmp)" in text


def test_exception_without_values_adds_nothing():
    rs = load(exc_rule("- name: a\n  fields: [proc.pname]\n"))
    assert str(rs.rules["r"].expr) == "(evt.type = execve and proc.name = cat)"


@pytest.mark.parametrize("body, message", [
    ("- name: a\n  fields: proc.pname\n  comps: '='\n  values: [x]\n",
     "comps must be one of (in, pmatch, intersects)"),
    ("- name: a\n  fields: proc.pname\n  comps: [in]\n  values: [x]\n",
     "must both be strings"),
    ("- name: a\n  fields: [proc.pname, fd.name]\n  comps: [=]\n  values: []\n",
     "equal length"),
    ("- name: a\n  fields: [proc.pname]\n  values: [[x, y]]\n",
     "Fields and values lists must have equal length"),
    ("- name: a\n  fields: proc.pname\n  values: [[x]]\n",
     "Expected values array to contain a list of strings"),
    ("- name: a\n  fields: [proc.pname]\n  comps: [resembles]\n  values: [[x]]\n",
     "'resembles' is not a supported comparison operator"),
    ("- name: a\n  fields: [proc.colour]\n  values: [[x]]\n",
     "'proc.colour' is not a supported filter field"),
    ("- fields: [proc.pname]\n  values: [[x]]\n", "no mapping for key 'name'"),
    ("- name: a\n  values: [[x]]\n", "must have fields property"),
    ("- just a string\n", "must be a mapping"),
    ("- name: a\n  fields: [proc.pname]\n  values: notalist\n", "must be a sequence"),
])
def test_exception_errors(body, message):
    assert any(message in e for e in errors(exc_rule(body))), errors(exc_rule(body))


def test_duplicate_exception_name_warns():
    text = exc_rule("- name: a\n  fields: [proc.pname]\n  values: [[x]]\n"
                    "- name: a\n  fields: [proc.pname]\n  values: [[y]]\n")
    assert any("Multiple definitions of exception 'a'" in w for w in warnings(text))


def test_exception_append_values_and_new():
    base = exc_rule("- name: a\n  fields: [proc.pname]\n  values: [[x]]\n")
    text = base + textwrap.dedent("""\
        - rule: r
          exceptions:
            - name: a
              values: [[y]]
            - name: b
              fields: [fd.name]
              comps: [startswith]
              values: [[/tmp]]
          override:
            exceptions: append
        """)
    rs = load(text)
    assert fires(rs, {**EXEC_CAT, "proc.pname": "y"}) == []
    assert fires(rs, {**EXEC_CAT, "fd.name": "/tmp/a"}) == []
    assert fires(rs, {**EXEC_CAT, "proc.pname": "z"}) == ["r"]


def test_exception_append_errors_and_warnings():
    base = exc_rule("- name: a\n  fields: [proc.pname]\n  values: [[x]]\n")
    bad = base + "- rule: r\n  exceptions:\n    - name: a\n      fields: [fd.name]\n" \
                 "      values: [[y]]\n  override:\n    exceptions: append\n"
    assert any("Can not append exception fields" in e for e in errors(bad))
    typo = base + "- rule: r\n  exceptions:\n    - name: a\n      value: [[y]]\n" \
                  "  override:\n    exceptions: append\n"
    assert any("with no values" in w for w in warnings(typo))
    legacy = base + "- rule: r\n  exceptions:\n    - name: a\n      values: [[y]]\n" \
                    "  append: true\n"
    assert fires(load(legacy), {**EXEC_CAT, "proc.pname": "y"}) == []


def test_exception_replace_needs_full_definitions():
    base = exc_rule("- name: a\n  fields: [proc.pname]\n  values: [[x]]\n")
    bad = base + "- rule: r\n  exceptions:\n    - name: a\n      values: [[y]]\n" \
                 "  override:\n    exceptions: replace\n"
    assert any("must have fields property" in e for e in errors(bad))


def test_exception_value_that_looks_like_a_field_is_a_string():
    rs = load(exc_rule("- name: a\n  fields: [proc.pname]\n  values: [[proc.name]]\n"))
    assert fires(rs, {**EXEC_CAT, "proc.pname": "cat"}) == ["r"]
    assert fires(rs, {**EXEC_CAT, "proc.pname": "proc.name"}) == []


def test_exception_transformer_value_is_field_to_field():
    rs = load(exc_rule("- name: a\n  fields: [proc.pname]\n  values: [[toupper(proc.name)]]\n"))
    assert fires(rs, {**EXEC_CAT, "proc.pname": "CAT"}) == []


def test_exception_fields_with_transformers():
    rs = load(exc_rule("- name: a\n  fields: [tolower(proc.pname)]\n  values: [[bash]]\n"))
    assert fires(rs, {**EXEC_CAT, "proc.pname": "BASH"}) == []


# -- 5. enabled, priorities --------------------------------------------------------------

def test_disabled_rule_loads_but_never_fires():
    rs = load(RULE.replace("INFO", "INFO\n  enabled: false"))
    assert rs.counts() == {"rules": 1, "macros": 0, "lists": 0, "enabled": 0}
    assert fires(rs, EXEC_CAT) == []
    assert Engine(rs, hostname="h").event_types() == frozenset()


@pytest.mark.parametrize("word, prio", [
    ("INFO", Priority.INFORMATIONAL), ("info", Priority.INFORMATIONAL),
    ("Informational", Priority.INFORMATIONAL), ("Emergency", Priority.EMERGENCY),
    ("alert", Priority.ALERT), ("CRITICAL", Priority.CRITICAL), ("Error", Priority.ERROR),
    ("warning", Priority.WARNING), ("NOTICE", Priority.NOTICE), ("debug", Priority.DEBUG),
])
def test_priorities(word, prio):
    assert load(RULE.replace("INFO", word)).rules["r"].priority == prio


# -- 6. outputs ----------------------------------------------------------------------------

def test_unknown_output_field_is_an_error_unless_skipped():
    bad = RULE.replace('"o %proc.name"', '"o %proc.colour"')
    assert any("proc.colour" in e for e in errors(bad))
    rs = load(bad + "  skip-if-unknown-filter: true\n")
    assert "r" not in rs.rules
    assert any("proc.colour" in d.message for d in rs.warnings)


def test_skip_if_unknown_filter_for_conditions_only_covers_fields():
    skipped = load(RULE.replace("proc.name = cat", "proc.colour = red") +
                   "  skip-if-unknown-filter: true\n")
    assert "r" not in skipped.rules
    with pytest.raises(RuleError):
        load(RULE.replace("proc.name = cat", "proc.name = ") +
             "  skip-if-unknown-filter: true\n")


def test_output_rendering():
    rs = load(RULE.replace('"o %proc.name"',
                           '"f=%fd.name p=%proc.aname[2] n=%proc.pid c=%container.info"'))
    alert = Engine(rs, hostname="h").evaluate({**EXEC_CAT, "proc.aname": ["a", "b"],
                                               "proc.pid": 7, "evt.rawtime": 5})[0]
    assert alert.output == "f=<NA> p=b n=7 c="
    assert alert.output_fields == {"fd.name": None, "proc.aname[2]": "b", "proc.pid": 7,
                                   "evt.time": 5}
    assert alert.time_ns == 5 and alert.hostname == "h"


# -- condition warnings (§72, §73, §109, §117, §126) -------------------------------------

@pytest.mark.parametrize("condition, message", [
    ("proc.name = proc.pname", "'proc.pname' may be a valid field misused as a const"),
    ("proc.name in (a, proc.pname)", "'proc.pname' may be a valid field misused"),
    ("proc.name = 'toupper( proc.pname)'", "may be a valid field transformer misused"),
    ("evt.dir = <", "deprecated field 'evt.dir'"),
    ("proc.name regex '^syscall$'", "has no special characters"),
    ("proc.name regex 'sys.*'", "has no special characters"),
])
def test_condition_warnings(condition, message):
    text = RULE.replace("proc.name = cat", condition)
    assert any(message in w for w in warnings(text)), warnings(text)


@pytest.mark.parametrize("condition", [
    "proc.name = val(proc.pname)", "proc.name = tolower", "proc.name = 'somefn(g)'",
    "proc.name regex 's.*l'", "proc.name regex 'syscal[l]?'", "proc.name regex 'syscall.{1}'",
    "proc.name = kubernetes.io",
])
def test_no_condition_warnings(condition):
    assert warnings(RULE.replace("proc.name = cat", condition)) == []


def test_warning_in_a_macro_is_reported_once_at_the_macro():
    text = ("- macro: m\n  condition: proc.name = proc.pname\n" +
            RULE.replace("proc.name = cat", "m") +
            RULE.replace("rule: r", "rule: s").replace("proc.name = cat", "m"))
    found = [d for d in load(text).warnings if "misused" in d.message]
    assert len(found) == 1 and (found[0].line, found[0].column) == (2, 26)


def test_positions_survive_list_substitution():
    text = ("- list: l\n  items: [a, b, c, d, e, f]\n"
            "- rule: r\n  desc: d\n  condition: proc.name in (l) and proc.colour = x\n"
            "  output: o\n  priority: INFO\n")
    with pytest.raises(RuleError) as err:
        load(text)
    d = err.value.diagnostics[0]
    assert (d.line, d.column) == (5, 35)


def test_deeply_nested_condition_compiles_and_evaluates():
    depth = 400
    condition = "(evt.type = execve and (" * depth + "proc.name = cat" + "))" * depth
    rs = load(RULE.replace("evt.type = execve and proc.name = cat", condition))
    assert fires(rs, EXEC_CAT) == ["r"]
    assert fires(rs, {"evt.type": "execve", "proc.name": "ls"}) == []
    deep_not = "not " * 500 + "proc.name = cat"
    rs = load(RULE.replace("proc.name = cat", deep_not))
    assert fires(rs, EXEC_CAT) == ["r"]  # an even number of nots


def test_output_of_ancestor_field_without_index_is_the_process_itself():
    rs = load(RULE.replace('"o %proc.name"', '"a=%proc.aname p=%proc.apid"'))
    alert = Engine(rs, hostname="h").evaluate({**EXEC_CAT, "proc.aname": ["bash"],
                                               "proc.pid": 9, "proc.apid": [1]})[0]
    assert alert.output == "a=cat p=9"


def test_broken_macro_used_through_another_macro_reports_its_own_error():
    text = ("- macro: inner\n  condition: proc.name = \n"
            "- macro: outer\n  condition: inner\n" + RULE.replace("proc.name = cat", "outer"))
    found = errors(text)
    assert len(found) == 1 and "macro 'inner'" in found[0]


def test_macro_loop_is_an_error():
    text = ("- macro: a\n  condition: proc.name = x\n"
            "- macro: b\n  condition: a\n"
            "- macro: a\n  condition: or b\n  override: {condition: append}\n" +
            RULE.replace("proc.name = cat", "a"))
    assert any("uses itself" in e for e in errors(text))


def test_exception_comps_with_modifiers():
    rs = load(exc_rule("""\
        - name: a
          fields: [proc.pname, fd.name]
          comps: [startswith oneof, " endswith  anyof "]
          values:
            - [[ssh, sudo], .log]
        - name: b
          fields: proc.exe
          comps: contains allof
          values: [usr, bin]
        """))
    text = str(rs.rules["r"].expr)
    assert "proc.pname startswith oneof (ssh, sudo) and fd.name endswith anyof (.log)" in text
    assert "proc.exe contains allof (usr, bin)" in text
    assert fires(rs, {**EXEC_CAT, "proc.pname": "sshd", "fd.name": "/a.log"}) == []
    assert fires(rs, {**EXEC_CAT, "proc.exe": "/usr/bin/x"}) == []
    assert fires(rs, {**EXEC_CAT, "proc.exe": "/usr/x"}) == ["r"]


@pytest.mark.parametrize("comp", ["in oneof", ">= oneof", "oneof", "startswith someof"])
def test_exception_comps_with_bad_modifiers(comp):
    text = exc_rule(f"- name: a\n  fields: [proc.pname]\n  comps: ['{comp}']\n"
                    "  values: [[[a]]]\n")
    assert any("is not a supported comparison operator" in e for e in errors(text))


@pytest.mark.parametrize("nots, fires_for_cat", [(999, False), (998, True)])
def test_deep_macro_expands_without_recursion_errors(nots, fires_for_cat):
    text = (f"- macro: m\n  condition: \"{'not (' * nots}proc.name = cat{')' * nots}\"\n" +
            RULE.replace("proc.name = cat", "m"))
    rs = load(text)
    assert (fires(rs, EXEC_CAT) == ["r"]) is fires_for_cat
    assert (fires(rs, {"evt.type": "execve", "proc.name": "ls"}) == ["r"]) is not fires_for_cat
