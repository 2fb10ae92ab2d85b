"""Loader behaviours that upstream Falco pins in its own tests (../shared/falco-rules/
upstream_tests.md, items 1-92), checked black-box through `enforcer validate --format json`
and, where evaluation matters, `enforcer replay`.

Each case is a small rules file written for the test (or several, loaded in order), what the
load must give (ok / error / warning, stable message substrings, counts of distinct names) and
optionally events with the rules they must trigger.

Not covered here because the CLI contract has no surface for them: minimum priority (79),
enabling/disabling by name substring, exact name, wildcard or tag and separate rulesets
(80-84), the `first` match strategy (85), configured extra output formats / fields (89, 90).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.unit.clirun import run_cli, write_events

Event = dict[str, Any]


@dataclass(frozen=True)
class Case:
    id: str
    files: tuple[str, ...]
    outcome: str = "ok"  # ok | error
    errors: tuple[str, ...] = ()  # substrings, each found in some error message
    warnings: tuple[str, ...] = ()  # substrings, each found in some warning message
    no_warnings: tuple[str, ...] = ()  # substrings found in no warning ("" = no warnings)
    counts: dict[str, int] = field(default_factory=dict)
    matches: tuple[tuple[Event, tuple[str, ...]], ...] = ()  # (event, rules it triggers)
    alert: dict[str, Any] = field(default_factory=dict)  # checks on the first event's alert


_TIME = iter(range(1763920000_000000000, 1763990000_000000000, 1_000_000_000))


def ev(**fields: Any) -> Event:
    """An exit event with keyword names using `__` for dots: proc__name='cat'."""
    event: Event = {"evt.type": "execve", "evt.dir": "<", "evt.rawtime": next(_TIME),
                    "container.id": "host", "evt.num": 42}
    for key, value in fields.items():
        event[key.replace("__", ".")] = value
    return event


def y(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def rule(name: str = "r", condition: str = "evt.type = execve and proc.name = cat",
         output: str = "hit proc=%proc.name", priority: str = "WARNING", extra: str = "") -> str:
    """A complete rule item."""
    text = (f"- rule: {name}\n  desc: test rule {name}\n  condition: {condition}\n"
            f"  output: {output}\n  priority: {priority}\n")
    if not extra:
        return text
    body = y(extra)
    return text + textwrap.indent(body if body.endswith("\n") else body + "\n", "  ")


CAT = ev(proc__name="cat")
LS = ev(proc__name="ls")

CASES: list[Case] = [
    # ---- 1. Loading and structure -------------------------------------------------------
    Case("01-top-level-mapping", (y("""
        rule: r
        desc: d
        condition: evt.type = execve
        output: o
        priority: INFO
        """),), "error"),
    Case("01-scalar-document", ("just words\n",), "error"),
    Case("01-invalid-yaml", (y("""
        - rule: r
          condition: [unclosed
        """),), "error"),
    Case("02-element-not-a-mapping", ("- just a string\n",), "error"),
    Case("03-empty-file", ("",), counts={"rules": 0, "macros": 0, "lists": 0, "enabled": 0}),
    Case("03-null-elements-skipped", ("-\n" + rule() + "- \n",), counts={"rules": 1}),
    Case("03-every-document-read", (rule("a") + "---\n" + rule("b"),),
         counts={"rules": 2, "enabled": 2}, matches=((CAT, ("a", "b")),)),
    Case("04-unknown-top-level-item", ("- exception_group: foo\n" + rule(),),
         warnings=("unknown",), counts={"rules": 1}, matches=((CAT, ("r",)),)),
    Case("05-unknown-key-in-macro", (y("""
        - macro: is_exec
          condition: evt.type = execve
          severity: high
        """) + rule(condition="is_exec and proc.name = cat"),),
         warnings=("severity",), counts={"rules": 1, "macros": 1}, matches=((CAT, ("r",)),)),
    Case("05-unknown-key-in-rule", (rule(extra="colour: red"),), warnings=("colour",),
         matches=((CAT, ("r",)),)),
    Case("06-priority-on-a-list", (y("""
        - list: tools
          items: [cat]
          priority: INFO
        """) + rule(condition="evt.type = execve and proc.name in (tools)"),),
         warnings=("priority",), counts={"lists": 1}, matches=((CAT, ("r",)),)),
    Case("07-missing-output", (y("""
        - rule: r
          desc: d
          condition: evt.type = execve
          priority: INFO
        """),), "error", errors=("output",)),
    Case("07-missing-condition", (y("""
        - rule: r
          desc: d
          output: o
          priority: INFO
        """),), "error", errors=("condition",)),
    Case("07-missing-priority", (y("""
        - rule: r
          desc: d
          condition: evt.type = execve
          output: o
        """),), "error", errors=("priority",)),
    Case("07-missing-desc", (y("""
        - rule: r
          condition: evt.type = execve
          output: o
          priority: INFO
        """),), "error", errors=("desc",)),
    Case("07-empty-output", (y("""
        - rule: r
          desc: d
          condition: evt.type = execve
          output:
          priority: INFO
        """),), "error", errors=("output",)),
    Case("07-empty-string-condition", (y("""
        - rule: r
          desc: d
          condition: ""
          output: o
          priority: INFO
        """),), "error", errors=("condition",)),
    Case("08-defaults-and-trimmed-output", (y("""
        - rule: r
          desc: d
          condition: evt.type = execve and proc.name = cat
          output: "   hit proc=%proc.name   "
          priority: INFO
        """),), counts={"rules": 1, "enabled": 1}, matches=((CAT, ("r",)),),
         alert={"source": "syscall", "tags": [], "output_body": "hit proc=cat",
                "priority": "Informational"}),
    Case("09-optional-keys-no-warning", (rule(extra="""
        warn_evttypes: true
        skip-if-unknown-filter: false
        capture: false
        capture_duration: 5000
        tags: [a, b]
        exceptions: []
        source: syscall
        enabled: true
        """),), no_warnings=("",), counts={"rules": 1, "enabled": 1},
         matches=((CAT, ("r",)),)),
    Case("10-capture-duration-not-integer", (rule(extra="capture_duration: abc"),), "error",
         errors=("capture_duration",)),
    Case("10-capture-yes-loads", (rule(extra="capture: yes"),), counts={"rules": 1}),
    Case("11-tags-not-a-sequence", (rule(extra="tags: {a: 1}"),), "error", errors=("tags",)),
    Case("11-tags-nested", (rule(extra="tags: [[a]]"),), "error", errors=("tags",)),
    Case("11-items-not-a-sequence", (y("""
        - list: l
          items: {a: 1}
        """),), "error", errors=("items",)),
    Case("11-empty-items", (y("""
        - list: l
          items: []
        """) + rule(condition="evt.type = execve and proc.name in (l)"),),
         counts={"lists": 1}, matches=((CAT, ()),)),
    Case("12-full-redefinition-replaces", (y("""
        - rule: r
          desc: a
          condition: evt.type = close
          output: x
          priority: INFO
          enabled: false
        - rule: r
          desc: b
          condition: evt.type = execve and proc.name = cat
          output: y
          priority: WARNING
        """),), counts={"rules": 1, "enabled": 1}, matches=((CAT, ("r",)),),
         alert={"output_body": "y", "priority": "Warning"}),
    Case("12-redefinition-across-files", (rule(output="first"), rule(output="second")),
         counts={"rules": 1}, matches=((CAT, ("r",)),), alert={"output_body": "second"}),
    Case("13-list-redefinition-replaces", (y("""
        - list: tools
          items: [cat]
        - list: tools
          items: [ls]
        """) + rule(condition="evt.type = execve and proc.name in (tools)"),),
         counts={"lists": 1}, matches=((CAT, ()), (LS, ("r",)))),
    Case("13-macro-redefinition-replaces", (y("""
        - macro: tool
          condition: proc.name = cat
        - macro: tool
          condition: proc.name = ls
        """) + rule(condition="evt.type = execve and tool"),),
         counts={"macros": 1}, matches=((CAT, ()), (LS, ("r",)))),
    Case("14-unknown-source-skipped", (rule(extra="source: no_such_source"),),
         warnings=("source",), matches=((CAT, ()),)),
    Case("15-append-with-different-source", (rule() + y("""
        - rule: r
          condition: or proc.name = ls
          source: k8s_audit
          override:
            condition: append
        """),), "error", errors=("source",)),
    Case("15-append-with-empty-source", (rule() + y("""
        - rule: r
          condition: or proc.name = ls
          source: ""
          override:
            condition: append
        """),), matches=((LS, ("r",)),)),
    Case("15-append-with-null-source", (rule() + y("""
        - rule: r
          condition: or proc.name = ls
          source:
          override:
            condition: append
        """),), matches=((LS, ("r",)),)),
    Case("16-engine-version-semver", ("- required_engine_version: 0.26.0\n" + rule(),),
         no_warnings=("",)),
    Case("16-engine-version-integer", ("- required_engine_version: 26\n" + rule(),),
         no_warnings=("",)),
    Case("16-engine-version-unparsable", ("- required_engine_version: seven\n",), "error",
         errors=("version",)),
    Case("16-engine-version-too-new", ("- required_engine_version: 99.0.0\n",), "error",
         errors=("engine version",)),
    Case("17-plugin-versions-ok", (y("""
        - required_plugin_versions:
            - name: container
              version: 0.4.0
              alternatives:
                - name: container_alt
                  version: 1.0.0
        """) + rule(),), counts={"rules": 1}),
    Case("17-plugin-versions-not-a-sequence", (y("""
        - required_plugin_versions:
            name: container
            version: 0.4.0
        """),), "error"),
    Case("17-plugin-version-not-semver", (y("""
        - required_plugin_versions:
            - name: container
              version: four
        """),), "error"),
    Case("17-plugin-alternative-repeats-name", (y("""
        - required_plugin_versions:
            - name: container
              version: 0.4.0
              alternatives:
                - name: container
                  version: 0.5.0
        """),), "error"),
    Case("18-list-invalid-name", (y("""
        - list: my list
          items: [cat]
        """),), warnings=("invalid",), counts={"lists": 1}),
    Case("19-macro-invalid-name", (y("""
        - macro: is-exec
          condition: evt.type = execve
        """),), warnings=("invalid",), counts={"macros": 1}),
    Case("20-unused-macro", (y("""
        - macro: unused_m
          condition: evt.type = execve
        """) + rule(),), warnings=("not referred|unused",), counts={"macros": 1, "rules": 1}),
    Case("20-lone-list-file", (y("""
        - list: lonely
          items: [a]
        """),), warnings=("not referred|unused",), counts={"lists": 1, "rules": 0}),
    # ---- 2. Lists and macros ------------------------------------------------------------
    Case("22-list-expanded", (y("""
        - list: editors
          items: [vi, nano]
        """) + rule(condition="evt.type = execve and proc.name in (editors)"),),
         matches=((ev(proc__name="vi"), ("r",)), (ev(proc__name="nano"), ("r",)),
                  (ev(proc__name="editors"), ()), (CAT, ()))),
    Case("23-list-and-literal", (y("""
        - list: editors
          items: [vi, nano]
        """) + rule(condition="evt.type = execve and proc.name in (editors, emacs)"),),
         matches=((ev(proc__name="emacs"), ("r",)), (ev(proc__name="vi"), ("r",)))),
    Case("24-list-name-only-as-whole-token", (y("""
        - list: editors
          items: [vi]
        """) + rule(condition=(
            "evt.type = execve and (proc.name in (editors_extra) or fd.name = /editors/x"
            " or proc.name in (editors))")),),
         matches=((ev(proc__name="editors_extra"), ("r",)),
                  (ev(proc__name="cat", fd__name="/editors/x"), ("r",)),
                  (ev(proc__name="cat", fd__name="/vi/x"), ()),
                  (ev(proc__name="vi"), ("r",)))),
    Case("25-empty-list-in-parentheses", (y("""
        - list: empty_l
          items: []
        """) + rule("a", "evt.type = execve and proc.name in (empty_l, bash)")
           + rule("b", "evt.type = execve and proc.name in (empty_l)"),),
         counts={"rules": 2}, matches=((ev(proc__name="bash"), ("a",)), (CAT, ()))),
    Case("26-undefined-list-name-is-literal", (
        rule(condition="evt.type = execve and proc.name in (undefined_thing)"),),
         matches=((ev(proc__name="undefined_thing"), ("r",)), (CAT, ()))),
    Case("27-list-includes-earlier-list", (y("""
        - list: a
          items: [x]
        - list: b
          items: [a, y]
        """) + rule(condition="evt.type = execve and proc.name in (b)"),),
         matches=((ev(proc__name="x"), ("r",)), (ev(proc__name="y"), ("r",)),
                  (ev(proc__name="a"), ()))),
    # The later list `d` is not spliced into `c` (c's items stay [d, z]), but Falco then
    # rewrites the condition text list by list, in definition order
    # (rule_loader_compiler.cpp, parse_condition -> resolve_list): `in (c, d)` becomes
    # `in (d, z, d)` after c, then `in (w, z, w)` after d. So "d" itself never matches.
    Case("27-later-list-stays-literal", (y("""
        - list: c
          items: [d, z]
        - list: d
          items: [w]
        """) + rule(condition="evt.type = execve and proc.name in (c, d)"),),
         matches=((ev(proc__name="d"), ()), (ev(proc__name="w"), ("r",)),
                  (ev(proc__name="z"), ("r",)))),
    # Falco splices the *raw* items of an earlier list (rule_loader_compiler.cpp,
    # compile_list_infos), so a list inside a list inside a list stays a literal.
    Case("27-splicing-is-one-level", (y("""
        - list: a
          items: [x]
        - list: b
          items: [a, y]
        - list: c
          items: [b, z]
        """) + rule(condition="evt.type = execve and proc.name in (c)"),),
         matches=((ev(proc__name="a"), ("r",)), (ev(proc__name="y"), ("r",)),
                  (ev(proc__name="z"), ("r",)), (ev(proc__name="x"), ()))),
    Case("28-rule-uses-later-list", (
        rule(condition="evt.type = execve and proc.name in (later)") + y("""
        - list: later
          items: [cat]
        """),), matches=((CAT, ("r",)),)),
    Case("29-quoted-items-keep-spaces", (y("""
        - list: editors
          items: [vi]
        - list: cmds
          items: [plain, '"two words"', '"editors"']
        """) + rule(condition="evt.type = execve and proc.cmdline in (cmds)"),),
         matches=((ev(proc__cmdline="two words"), ("r",)), (ev(proc__cmdline="plain"), ("r",)),
                  (ev(proc__cmdline="editors"), ("r",)), (ev(proc__cmdline="two"), ()),
                  (ev(proc__cmdline="vi"), ()))),
    Case("30-not-macro-negates-whole-body", (y("""
        - macro: is_shell
          condition: proc.name = bash or proc.name = sh
        """) + rule(condition="evt.type = execve and not is_shell"),),
         matches=((ev(proc__name="bash"), ()), (ev(proc__name="sh"), ()), (CAT, ("r",)))),
    Case("30-macro-is-one-parenthesised-unit", (y("""
        - macro: cat_or_dog
          condition: proc.name = cat or proc.name = dog
        """) + rule(condition="evt.type = execve and cat_or_dog"),),
         matches=((ev(evt__type="openat", proc__name="dog"), ()),
                  (ev(proc__name="dog"), ("r",)))),
    Case("31-nested-macros", (y("""
        - macro: inner
          condition: proc.name = cat
        - macro: outer
          condition: evt.type = execve and inner
        """) + rule(condition="outer"),), counts={"macros": 2},
         matches=((CAT, ("r",)), (LS, ()))),
    Case("32-rule-uses-later-macro", (
        rule(condition="evt.type = execve and later_m") + y("""
        - macro: later_m
          condition: proc.name = cat
        """),), matches=((CAT, ("r",)),)),
    Case("32-macro-uses-later-macro", (y("""
        - macro: first_m
          condition: second_m
        - macro: second_m
          condition: proc.name = cat
        """) + rule(condition="evt.type = execve and first_m"),), "error",
         errors=("Undefined macro",)),
    Case("33-undefined-macro-in-rule", (rule(condition="evt.type = execve and no_such_m"),),
         "error", errors=("Undefined macro", "no_such_m")),
    Case("34-each-use-is-independent", (y("""
        - macro: is_cat
          condition: proc.name = cat
        """) + rule(condition="evt.type = execve and (is_cat or not is_cat)"),),
         matches=((CAT, ("r",)), (LS, ("r",)))),
    Case("35-syntax-error-in-unused-macro", (y("""
        - macro: broken
          condition: proc.name = = cat
        """) + rule(),), "error"),
    Case("36-keyword-prefixed-macro-names", (y("""
        - macro: notz
          condition: proc.name = cat
        - macro: not_macro
          condition: evt.type = execve
        - macro: and_macro
          condition: proc.pid > 0
        - macro: or_macro
          condition: proc.pid < 100000
        """) + rule(condition="not_macro and notz and and_macro and or_macro"),),
         counts={"macros": 4}, matches=((ev(proc__name="cat", proc__pid=7), ("r",)),
                                        (ev(proc__name="ls", proc__pid=7), ()))),
    Case("37-never-true-placeholder", (y("""
        - macro: never_true
          condition: (evt.num=0)
        - macro: user_known_thing
          condition: (never_true)
        """) + rule(condition="evt.type = execve and proc.name = cat and not user_known_thing"),),
         counts={"rules": 1, "enabled": 1}, matches=((CAT, ("r",)),)),
    # ---- 3. Append and override ---------------------------------------------------------
    Case("38-list-override-items-append", (y("""
        - list: shells
          items: [ash, bash]
        - list: shells
          items: [zsh]
          override:
            items: append
        """) + rule(condition="evt.type = execve and proc.name in (shells)"),),
         no_warnings=("deprecat",), counts={"lists": 1},
         matches=((ev(proc__name="zsh"), ("r",)), (ev(proc__name="ash"), ("r",)))),
    Case("39-list-legacy-append", (y("""
        - list: shells
          items: [ash, bash]
        - list: shells
          items: [zsh]
          append: true
        """) + rule(condition="evt.type = execve and proc.name in (shells)"),),
         warnings=("deprecated",), counts={"lists": 1},
         matches=((ev(proc__name="zsh"), ("r",)), (ev(proc__name="bash"), ("r",)))),
    Case("40-list-append-before-definition", (y("""
        - list: shells
          items: [zsh]
          override:
            items: append
        - list: shells
          items: [bash]
        """),), "error", errors=("no list by that name",)),
    Case("40-macro-append-before-definition", (y("""
        - macro: m
          condition: or proc.name = ls
          override:
            condition: append
        """),), "error", errors=("no macro by that name",)),
    Case("40-rule-legacy-append-before-definition", (y("""
        - rule: r
          condition: or proc.name = ls
          append: true
        """) + rule(),), "error", errors=("no rule by that name",)),
    Case("41-replace-on-missing-list-defines-it", (y("""
        - list: tools
          items: [cat]
          override:
            items: replace
        """) + rule(condition="evt.type = execve and proc.name in (tools)"),),
         counts={"lists": 1}, matches=((CAT, ("r",)),)),
    Case("41-later-plain-definition-replaces", (y("""
        - list: tools
          items: [cat]
          override:
            items: replace
        - list: tools
          items: [ls]
        """) + rule(condition="evt.type = execve and proc.name in (tools)"),),
         matches=((CAT, ()), (LS, ("r",)))),
    Case("42-misspelt-override-is-unknown-key", (y("""
        - list: tools
          items: [cat]
        - list: tools
          items: [ls]
          overide:
            items: append
        """) + rule(condition="evt.type = execve and proc.name in (tools)"),),
         warnings=("overide",), matches=((CAT, ()), (LS, ("r",)))),
    Case("43-macro-condition-append", (y("""
        - macro: opens
          condition: evt.type in (open, openat)
        - macro: opens
          condition: or evt.type = openat2
          override:
            condition: append
        """) + rule(condition="opens and proc.name = cat"),), no_warnings=("deprecat",),
         matches=((ev(evt__type="openat2", proc__name="cat"), ("r",)),
                  (ev(evt__type="openat", proc__name="cat"), ("r",)),
                  (ev(evt__type="close", proc__name="cat"), ()))),
    Case("43-macro-legacy-append", (y("""
        - macro: opens
          condition: evt.type in (open, openat)
        - macro: opens
          condition: or evt.type = openat2
          append: true
        """) + rule(condition="opens and proc.name = cat"),), warnings=("deprecated",),
         matches=((ev(evt__type="openat2", proc__name="cat"), ("r",)),)),
    Case("44-append-is-text-with-precedence", (y("""
        - macro: m
          condition: proc.name = a or proc.name = b
        - macro: m
          condition: and fd.name = z
          override:
            condition: append
        """) + rule(condition="evt.type = openat and m"),),
         matches=((ev(evt__type="openat", proc__name="a", fd__name="q"), ("r",)),
                  (ev(evt__type="openat", proc__name="b", fd__name="q"), ()),
                  (ev(evt__type="openat", proc__name="b", fd__name="z"), ("r",)))),
    Case("45-rule-condition-output-desc-tags-append", (rule(extra="tags: [one]") + y("""
        - rule: r
          condition: or proc.name = ls
          output: pid=%proc.pid
          desc: more words
          tags: [two]
          override:
            condition: append
            output: append
            desc: append
            tags: append
        """),), counts={"rules": 1},
         matches=((ev(proc__name="ls", proc__pid=42), ("r",)), (CAT, ("r",))),
         alert={"output_body": "hit proc=ls pid=42", "tags": ["one", "two"]}),
    Case("46-priority-replace", (rule() + y("""
        - rule: r
          priority: CRITICAL
          override:
            priority: replace
        """),), matches=((CAT, ("r",)),), alert={"priority": "Critical"}),
    Case("46-output-and-tags-replace", (rule(extra="tags: [old]") + y("""
        - rule: r
          output: new output %proc.name
          tags: [new]
          override:
            output: replace
            tags: replace
        """),), matches=((CAT, ("r",)),),
         alert={"output_body": "new output cat", "tags": ["new"]}),
    Case("46-condition-replace", (rule() + y("""
        - rule: r
          condition: evt.type = execve and proc.name = ls
          override:
            condition: replace
        """),), matches=((CAT, ()), (LS, ("r",)))),
    Case("47-mixed-override-modes", (rule() + y("""
        - rule: r
          desc: replaced
          condition: or proc.name = ls
          priority: ERROR
          override:
            desc: replace
            condition: append
            priority: replace
        """),), matches=((LS, ("r",)),), alert={"priority": "Error"}),
    Case("48-priority-cannot-be-appended", (rule() + y("""
        - rule: r
          priority: INFO
          override:
            priority: append
        """),), "error", errors=("cannot be appended",)),
    Case("48-source-cannot-be-replaced", (rule() + y("""
        - rule: r
          source: syscall
          override:
            source: replace
        """),), "error", errors=("cannot be replaced",)),
    Case("48-invalid-override-operation", (rule() + y("""
        - rule: r
          condition: or proc.name = ls
          override:
            condition: merge
        """),), "error", errors=("override|merge",)),
    Case("49-override-key-not-defined", (rule() + y("""
        - rule: r
          output: x
          override:
            condition: append
            output: replace
        """),), "error", errors=("condition",)),
    Case("49-enabled-replace-without-enabled", (rule() + y("""
        - rule: r
          condition: or proc.name = ls
          override:
            condition: append
            enabled: replace
        """),), "error", errors=("enabled",)),
    Case("50-key-without-override-entry", (rule() + y("""
        - rule: r
          condition: or proc.name = ls
          priority: INFO
          override:
            condition: append
        """),), "error", errors=("priority",)),
    Case("51-append-and-override-together", (rule() + y("""
        - rule: r
          condition: or proc.name = ls
          append: true
          override:
            condition: append
        """),), "error", errors=("override",)),
    Case("52-override-append-missing-rule", (y("""
        - rule: ghost
          condition: or proc.name = ls
          override:
            condition: append
        """),), "error", errors=("no rule by that name",)),
    Case("52-override-replace-missing-rule", (y("""
        - rule: ghost
          priority: INFO
          override:
            priority: replace
        """),), "error", errors=("no rule by that name",)),
    Case("53-legacy-append-ignores-enabled", (rule(extra="enabled: false") + y("""
        - rule: r
          condition: or proc.name = ls
          enabled: true
          append: true
        """),), counts={"rules": 1, "enabled": 0}, matches=((CAT, ()), (LS, ()))),
    Case("53-legacy-append-condition", (rule() + y("""
        - rule: r
          condition: or proc.name = ls
          append: true
        """),), warnings=("deprecated",), matches=((LS, ("r",)), (CAT, ("r",)))),
    Case("54-legacy-append-without-condition-or-exceptions", (rule() + y("""
        - rule: r
          output: x
          append: true
        """),), "error"),
    Case("55-override-enabled-replace", (rule(extra="enabled: false") + y("""
        - rule: r
          enabled: true
          override:
            enabled: replace
        """),), no_warnings=("",), counts={"rules": 1, "enabled": 1},
         matches=((CAT, ("r",)),)),
    Case("56-replace-flags", (rule(extra="capture: true\nwarn_evttypes: true") + y("""
        - rule: r
          capture: false
          capture_duration: 15000
          warn_evttypes: false
          override:
            capture: replace
            capture_duration: replace
            warn_evttypes: replace
        """),), counts={"rules": 1}, matches=((CAT, ("r",)),)),
    Case("57-appended-rule-keeps-its-position", (
        rule("first", "evt.type = execve and proc.name = cat")
        + rule("second", "evt.type = execve and proc.name = cat") + y("""
        - rule: first
          condition: or proc.name = ls
          override:
            condition: append
        """),), matches=((CAT, ("first", "second")),)),
    # ---- 4. Exceptions ------------------------------------------------------------------
    # `=` unquoted, as yaml-cpp (Falco) reads it and as users write it.
    Case("58-tuple-exception", (rule(condition="evt.type = openat", extra="""
        exceptions:
          - name: trusted
            fields: [proc.name, fd.directory]
            comps: [=, startswith]
            values:
              - [backup, /srv]
        """),), matches=(
        (ev(evt__type="openat", proc__name="backup", fd__directory="/srv/data"), ()),
        (ev(evt__type="openat", proc__name="backup", fd__directory="/home"), ("r",)),
        (ev(evt__type="openat", proc__name="cat", fd__directory="/srv"), ("r",)))),
    Case("58-tuple-exception-quoted-comps", (rule(condition="evt.type = openat", extra="""
        exceptions:
          - name: trusted
            fields: [proc.name, fd.directory]
            comps: ['=', startswith]
            values:
              - [backup, /srv]
        """),), matches=(
        (ev(evt__type="openat", proc__name="backup", fd__directory="/srv/data"), ()),
        (ev(evt__type="openat", proc__name="backup", fd__directory="/home"), ("r",)))),
    Case("59-single-field-value-with-spaces", (rule(condition="evt.type = execve", extra="""
        exceptions:
          - name: quiet_wget
            fields: [proc.cmdline]
            comps: [contains]
            values:
              - [wget -q]
        """),), matches=((ev(proc__cmdline="wget -q http://x"), ()),
                         (ev(proc__cmdline="wget http://x"), ("r",)))),
    Case("60-comps-default-to-equals", (rule(condition="evt.type = execve", extra="""
        exceptions:
          - name: cat_under_bash
            fields: [proc.name, proc.pname]
            values:
              - [cat, bash]
        """),), matches=((ev(proc__name="cat", proc__pname="bash"), ()),
                         (ev(proc__name="cat", proc__pname="sh"), ("r",)))),
    Case("61-scalar-field-defaults-to-in", (rule(condition="evt.type = execve", extra="""
        exceptions:
          - name: tools
            fields: proc.name
            values: [cat, ls]
        """),), matches=((CAT, ()), (LS, ()), (ev(proc__name="vi"), ("r",)))),
    Case("61-scalar-field-pmatch", (rule(condition="evt.type = openat", extra="""
        exceptions:
          - name: dirs
            fields: fd.name
            comps: pmatch
            values: [/srv/data]
        """),), matches=((ev(evt__type="openat", fd__name="/srv/data/x"), ()),
                         (ev(evt__type="openat", fd__name="/srv/database"), ("r",)))),
    Case("61-scalar-field-with-equals", (rule(extra="""
        exceptions:
          - name: tools
            fields: proc.name
            comps: "="
            values: [cat]
        """),), "error", errors=("comps",)),
    Case("62-scalar-fields-list-comps", (rule(extra="""
        exceptions:
          - name: tools
            fields: proc.name
            comps: [in]
            values: [cat]
        """),), "error"),
    Case("62-fields-comps-length-differ", (rule(extra="""
        exceptions:
          - name: tools
            fields: [proc.name, proc.pname]
            comps: ['=']
            values: [[cat, bash]]
        """),), "error", errors=("length",)),
    Case("62-values-length-differs", (rule(extra="""
        exceptions:
          - name: tools
            fields: [proc.name, proc.pname]
            comps: ['=', '=']
            values: [[cat]]
        """),), "error", errors=("length",)),
    Case("62-scalar-field-nested-value", (rule(extra="""
        exceptions:
          - name: tools
            fields: proc.name
            values: [[cat]]
        """),), "error"),
    Case("63-unknown-comparison", (rule(extra="""
        exceptions:
          - name: e
            fields: [proc.name]
            comps: [resembles]
            values: [[cat]]
        """),), "error", errors=("resembles",)),
    Case("63-unknown-field", (rule(extra="""
        exceptions:
          - name: e
            fields: [proc.colour]
            values: [[red]]
        """),), "error", errors=("proc.colour",)),
    Case("64-exception-without-name", (rule(extra="""
        exceptions:
          - fields: [proc.name]
            values: [[cat]]
        """),), "error", errors=("name",)),
    Case("64-exception-without-fields", (rule(extra="""
        exceptions:
          - name: e
            values: [[cat]]
        """),), "error", errors=("fields",)),
    Case("64-exceptions-not-a-sequence", (rule(extra="""
        exceptions:
          name: e
        """),), "error"),
    Case("64-exception-values-not-a-sequence", (rule(extra="""
        exceptions:
          - name: e
            fields: [proc.name]
            values: cat
        """),), "error"),
    Case("65-null-exceptions", (rule(extra="exceptions:"),), matches=((CAT, ("r",)),)),
    Case("65-exception-without-values", (rule(extra="""
        exceptions:
          - name: e
            fields: [proc.name]
        """),), matches=((CAT, ("r",)),)),
    Case("66-duplicate-exception-name", (rule(condition="evt.type = execve", extra="""
        exceptions:
          - name: dup_exc
            fields: [proc.name]
            values: [[cat]]
          - name: dup_exc
            fields: [proc.name]
            values: [[ls]]
        """),), warnings=("dup_exc",), matches=((ev(proc__name="vi"), ("r",)),)),
    Case("67-list-value-for-list-operator", (rule(condition="evt.type = openat", extra="""
        exceptions:
          - name: e
            fields: [proc.name, fd.name]
            comps: [in, startswith]
            values:
              - [[a, b], /tmp]
              - [c, /var]
        """),), matches=(
        (ev(evt__type="openat", proc__name="b", fd__name="/tmp/x"), ()),
        (ev(evt__type="openat", proc__name="c", fd__name="/var/x"), ()),
        (ev(evt__type="openat", proc__name="d", fd__name="/tmp/x"), ("r",)))),
    Case("68-exceptions-apply-after-appends", (rule(extra="""
        exceptions:
          - name: not_ls
            fields: [proc.name]
            values: [[ls]]
        """) + y("""
        - rule: r
          condition: or proc.name = ls
          override:
            condition: append
        """),), matches=((LS, ()), (CAT, ("r",)))),
    Case("69-append-values-to-existing-exception", (rule(condition="evt.type = execve",
                                                         extra="""
        exceptions:
          - name: tools
            fields: [proc.name]
            values: [[cat]]
        """) + y("""
        - rule: r
          exceptions:
            - name: tools
              values: [[ls]]
          override:
            exceptions: append
        """),), matches=((CAT, ()), (LS, ()), (ev(proc__name="vi"), ("r",)))),
    Case("69-append-fields-to-existing-exception", (rule(extra="""
        exceptions:
          - name: tools
            fields: [proc.name]
            values: [[cat]]
        """) + y("""
        - rule: r
          exceptions:
            - name: tools
              fields: [proc.pname]
              values: [[ls]]
          override:
            exceptions: append
        """),), "error", errors=("fields",)),
    Case("69-append-new-exception", (rule(condition="evt.type = execve", extra="""
        exceptions:
          - name: tools
            fields: [proc.name]
            values: [[cat]]
        """) + y("""
        - rule: r
          exceptions:
            - name: parents
              fields: [proc.pname]
              values: [[make]]
          append: true
        """),), matches=((CAT, ()), (ev(proc__name="vi", proc__pname="make"), ()),
                         (ev(proc__name="vi", proc__pname="bash"), ("r",)))),
    Case("69-append-new-exception-without-fields", (rule() + y("""
        - rule: r
          exceptions:
            - name: parents
              values: [[make]]
          override:
            exceptions: append
        """),), "error", errors=("fields",)),
    Case("70-appended-exception-without-values", (rule(extra="""
        exceptions:
          - name: tools
            fields: [proc.name]
            values: [[ls]]
        """) + y("""
        - rule: r
          exceptions:
            - name: tools
              value: [[cat]]
          override:
            exceptions: append
        """),), warnings=("no values",), matches=((CAT, ("r",)),)),
    Case("71-replace-needs-full-exceptions", (rule(extra="""
        exceptions:
          - name: tools
            fields: [proc.name]
            values: [[ls]]
        """) + y("""
        - rule: r
          exceptions:
            - name: tools
              values: [[cat]]
          override:
            exceptions: replace
        """),), "error", errors=("fields",)),
    Case("71-replace-exceptions", (rule(condition="evt.type = execve", extra="""
        exceptions:
          - name: tools
            fields: [proc.name]
            values: [[ls]]
        """) + y("""
        - rule: r
          exceptions:
            - name: other
              fields: [proc.name]
              values: [[cat]]
          override:
            exceptions: replace
        """),), matches=((CAT, ()), (LS, ("r",)))),
    Case("72-field-like-value-is-a-string", (rule(condition="evt.type = execve", extra="""
        exceptions:
          - name: same_as_parent
            fields: [proc.name]
            values: [[proc.pname]]
        """),),
         matches=((ev(proc__name="bash", proc__pname="bash"), ("r",)),
                  (ev(proc__name="proc.pname", proc__pname="bash"), ()))),
    Case("72-field-like-value-warns", (rule(condition="evt.type = execve", extra="""
        exceptions:
          - name: same_as_parent
            fields: [proc.name]
            values: [[proc.pname]]
        """),), warnings=("'proc.pname' may be a valid field",)),
    Case("73-transformer-value-compares-fields", (rule(condition="evt.type = execve", extra="""
        exceptions:
          - name: upper_parent
            fields: [proc.name]
            values: [[toupper(proc.pname)]]
        """),), matches=((ev(proc__name="BASH", proc__pname="bash"), ()),
                         (ev(proc__name="bash", proc__pname="bash"), ("r",)))),
    Case("73-transformer-with-space-is-a-string", (rule(condition="evt.type = execve", extra="""
        exceptions:
          - name: upper_parent
            fields: [proc.name]
            values: [[toupper( proc.pname)]]
        """),), matches=((ev(proc__name="BASH", proc__pname="bash"), ("r",)),
                         (ev(proc__name="toupper( proc.pname)", proc__pname="bash"), ()))),
    Case("73-transformer-with-space-warns", (rule(condition="evt.type = execve", extra="""
        exceptions:
          - name: upper_parent
            fields: [proc.name]
            values: [[toupper( proc.pname)]]
        """),), warnings=("may be a valid field transformer",)),
    Case("74-transformer-in-fields", (rule(condition="evt.type = execve", extra="""
        exceptions:
          - name: lower_name
            fields: [tolower(proc.name)]
            values: [[cat]]
        """),), no_warnings=("misused",),
         matches=((ev(proc__name="CAT"), ()), (ev(proc__name="Dog"), ("r",)))),
    Case("75-comps-with-modifier", (rule(condition="evt.type = execve", extra="""
        exceptions:
          - name: prefixes
            fields: [proc.name]
            comps: [startswith oneof]
            values: [[[ssh, sudo]]]
        """),), matches=((ev(proc__name="sshd"), ()), (ev(proc__name="sudoedit"), ()),
                         (CAT, ("r",)))),
    Case("75-modifier-on-list-operator", (rule(extra="""
        exceptions:
          - name: e
            fields: [proc.name]
            comps: [in oneof]
            values: [[[a]]]
        """),), "error"),
    # ---- 5. Enabled, priorities ---------------------------------------------------------
    Case("76-disabled-rule", (rule(extra="enabled: false"),), no_warnings=("",),
         counts={"rules": 1, "enabled": 0}, matches=((CAT, ()),)),
    Case("77-standalone-enabled", (rule(extra="enabled: false") + y("""
        - rule: r
          enabled: true
        """),), warnings=("deprecated",), counts={"rules": 1, "enabled": 1},
         matches=((CAT, ("r",)),)),
    Case("77-standalone-enabled-missing-rule", (y("""
        - rule: ghost
          enabled: true
        """),), "error", errors=("no rule by that name",)),
    Case("78-priority-spellings", (
        rule("a", priority="INFO") + rule("b", priority="info")
        + rule("c", priority="Informational") + rule("d", priority="emergency")
        + rule("e", priority="Debug") + rule("f", priority="warning"),),
         counts={"rules": 6, "enabled": 6}, matches=((CAT, ("a", "b", "c", "d", "e", "f")),),
         alert={"priority": "Informational"}),
    Case("78-invalid-priority", (rule(priority="LOW"),), "error", errors=("Invalid priority",)),
    # ---- 6. Outputs ---------------------------------------------------------------------
    Case("86-unknown-field-in-output", (rule(output="x=%proc.colour"),), "error",
         errors=("proc.colour",)),
    Case("86-unknown-field-in-condition",
         (rule(condition="evt.type = execve and proc.colour = red"),),
         "error", errors=("proc.colour",)),
    Case("86-skip-if-unknown-filter", (
        rule("bad", output="x=%proc.colour", extra="skip-if-unknown-filter: true")
        + rule("good"),), warnings=("proc.colour",), matches=((CAT, ("good",)),)),
    Case("87-container-info-removed", (rule(output="a=%proc.name %container.info"),),
         warnings=("container.info",), matches=((CAT, ("r",)),),
         alert={"output_body_startswith": "a=cat", "output_lacks": "container.info"}),
    Case("88-evt-dir-in-output", (rule(output="dir=%evt.dir name=%proc.name"),),
         warnings=("evt.dir",), counts={"rules": 1}, matches=((CAT, ("r",)),)),
    Case("88-no-evt-dir-no-warning", (rule(),), no_warnings=("evt.dir",)),
    Case("92-missing-field-renders-na", (rule(output="pid=%proc.pid name=%proc.name"),),
         matches=((CAT, ("r",)),), alert={"output_body": "pid=<NA> name=cat"}),
]


def _write(tmp_path: Path, case: Case) -> list[Path]:
    paths = []
    for index, text in enumerate(case.files):
        path = tmp_path / f"rules_{index}.yaml"
        path.write_text(text)
        paths.append(path)
    return paths


def _messages(items: list[Any]) -> list[str]:
    return [item["message"] if isinstance(item, dict) else str(item) for item in items]


def _found(needle: str, haystack: list[str]) -> bool:
    """`needle` may list alternatives separated by `|`; matching ignores case."""
    options = [n.lower() for n in needle.split("|")]
    return any(o in message.lower() for o in options for message in haystack)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_loader_behaviour(case: Case, tmp_path: Path) -> None:
    paths = _write(tmp_path, case)
    result = run_cli("validate", *paths, "--format", "json")
    report = result.json()
    errors, warnings = report["errors"], _messages(report.get("warnings", []))
    error_messages = _messages(errors)

    if case.outcome == "error":
        assert result.code == 1, result.stdout
        assert errors, "expected a load error"
        for entry in errors:
            assert Path(entry["file"]).name in {p.name for p in paths}
            assert isinstance(entry["line"], int) and entry["line"] >= 1
            assert isinstance(entry["column"], int) and entry["column"] >= 1
            assert entry["message"].strip()
        for needle in case.errors:
            assert _found(needle, error_messages), (needle, error_messages)
        return

    assert result.code == 0, error_messages
    assert errors == []
    for needle in case.warnings:
        assert _found(needle, warnings), (needle, warnings)
    for needle in case.no_warnings:
        if needle == "":
            assert warnings == []
        else:
            assert not _found(needle, warnings), (needle, warnings)
    for key, value in case.counts.items():
        assert report[key] == value, key

    # Falco's engine tests run without falco.yaml's suggested_output, and so do these: the
    # output bodies are the rules' own
    no_append = tmp_path / "append_output.yaml"
    no_append.write_text("append_output: []\n")
    for index, (event, expected) in enumerate(case.matches):
        stream = write_events(tmp_path / f"events_{index}.jsonl", [event])
        replay = run_cli("replay", stream, "--append-output", str(no_append), "--rules", *paths)
        assert replay.code == 0, replay.stderr
        alerts = replay.alerts()
        assert tuple(a["rule"] for a in alerts) == expected, event
        if index == 0 and case.alert:
            _check_alert(alerts[0], case.alert)


def _check_alert(alert: dict[str, Any], checks: dict[str, Any]) -> None:
    # output is "HH:MM:SS.nnnnnnnnn: Priority body"
    body = alert["output"].split(" ", 2)[2]
    for key, expected in checks.items():
        if key == "output_body":
            assert body == expected
        elif key == "output_body_startswith":
            assert body.startswith(expected), body
        elif key == "output_lacks":
            assert expected not in alert["output"]
        elif key == "tags":
            assert sorted(alert["tags"]) == sorted(expected)
        else:
            assert alert[key] == expected, key


def test_validate_text_success(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(y("""
        - list: tools
          items: [cat]
        - macro: is_exec
          condition: evt.type = execve
        """) + rule(condition="is_exec and proc.name in (tools)"))
    result = run_cli("validate", path)
    assert result.code == 0
    assert "1 rules, 1 macros, 1 lists" in result.stdout


def test_validate_text_errors_name_file_line_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(rule() + rule("s", priority="LOW"))
    result = run_cli("validate", path)
    assert result.code == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines()
             if line.startswith(f"{path}:")]
    assert lines, result.stdout + result.stderr
    location, message = lines[0][len(str(path)) + 1:].split(": ", 1)
    line, column = (int(part) for part in location.split(":"))
    # the bad priority is in the second rule (lines 6-10)
    assert 6 <= line <= 10 and column >= 1
    assert "invalid priority" in message.lower()
    assert "Traceback" not in result.stdout + result.stderr


def test_error_names_the_file_and_item_that_failed(tmp_path: Path) -> None:
    """Item 21: with several files, the error points into the file and item at fault."""
    good, bad = tmp_path / "a.yaml", tmp_path / "b.yaml"
    good.write_text(rule())
    bad.write_text(rule("s") + rule("t", priority="LOW"))
    report = run_cli("validate", good, bad, "--format", "json").json()
    assert report["errors"], report
    first = report["errors"][0]
    assert Path(first["file"]).name == "b.yaml"
    assert 6 <= first["line"] <= 10  # rule "t" spans lines 6-10
    assert "invalid priority" in first["message"].lower()
