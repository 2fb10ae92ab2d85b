"""Transformers and val() (upstream_tests.md §9)."""

from __future__ import annotations

import pytest

from enforcer.errors import RuleError

from .helpers import load, matches, rule_yaml

EV = {"evt.type": "x", "proc.name": "eXcItED", "fd.name": "/home/u/hello.txt",
      "proc.cmdline": "aGVsbG8=", "proc.pname": "EXCITED", "proc.cwd": "/",
      "fd.directory": "/dir/", "proc.exe": "plain", "fd.types": ["a", "b", "c"]}


@pytest.mark.parametrize("cond, expected", [
    ("toupper(proc.name) = EXCITED", True), ("tolower(proc.name) = excited", True),
    ("tolower(proc.name) = eXcItED", False),
    ("b64(proc.cmdline) = hello", True), ("b64( proc.cmdline ) = hello", True),
    ("basename(fd.name) = hello.txt", True), ('basename(proc.cwd) = ""', True),
    ('basename(fd.directory) = ""', True), ("basename(proc.exe) = plain", True),
    ("len(proc.cwd) = 1", True), ("len(fd.name) > 5", True), ("len(fd.types) = 3", True),
    ("tolower(proc.name) in (a, excited)", True), ("toupper(tolower(proc.name)) = EXCITED", True),
    ("b64(toupper(proc.cmdline)) = hello", False),
    ("tolower(proc.name) = tolower(proc.pname)", True),
    ("proc.pname = toupper(proc.name)", True),
    ("tolower(proc.cwd) exists", True), ("tolower(proc.sname) exists", False),
    ("tolower(proc.sname) != x", False),
])
def test_transformer(cond, expected):
    assert matches(cond, EV) is expected


@pytest.mark.parametrize("cond", [
    "toupper(proc.pid) = 1", "basename(evt.is_open_read) = x", "len(proc.name) contains 1",
    "proc.name = val(proc.pid)",
])
def test_transformer_type_errors(cond):
    with pytest.raises(RuleError):
        load(rule_yaml(cond))
