"""Condition grammar (upstream_tests.md §7): precedence, keywords, values, lists, errors."""

from __future__ import annotations

import pytest

from enforcer.rules import nodes
from enforcer.rules.parser import ConditionSyntaxError, parse

from .helpers import matches

T = "proc.name = t"   # true for EVENT
F = "proc.name = f"   # false for EVENT
EVENT = {"evt.type": "execve", "proc.name": "t"}


@pytest.mark.parametrize("cond, expected", [
    (f"{T} or {T} and {F}", True),
    (f"({T} or {T}) and {F}", False),
    (f"not ({F} or {F} or {T})", False),
    (f"not ({F} or {F} and not {T})", True),
    (f"not not {T}", True),
    (f"not not not {T}", False),
    (f"not(not(not {T}))", False),
    (f"{F} or not {F}", True),
    (f"not {F} and {T}", True),
])
def test_precedence_and_negation(cond, expected):
    assert matches(cond, EVENT) is expected


def test_or_binds_looser_than_and():
    expr = parse("a.x = 1 or a.y = 2 and a.z = 3")
    assert isinstance(expr, nodes.Or)
    assert isinstance(expr.children[1], nodes.And)


@pytest.mark.parametrize("text", [
    "(a)and(b)", "not(a)", "a and b and(c)", "notz", "not_macro", "and_macro or or_macro",
    "  a.b = 1  ", "a.b = 1\n\tand\n c.d = 2", "f.g=x", "f.g!=x", "f.g>=1", "f.g in()",
    "f.g in (a, 'b', \"c\")", "f.g in (a)", "fd.name=*.log", "x.y = 0a!@#:/\\.;$%^&*[]{}|",
    "x.y = not", "x.y = a.b", "x.y = ''", 'x.y = ""', "x.y = 'it\\'s'", 'x.y = "say \\"hi\\""',
    "x.y = \"it's\"", "proc.aname[2] = x", "evt.arg[0] = x", "evt.arg[name] = x",
    "f.g < -1", "f.g > +1", "f.g < 0x1F",
    "f.g <= 0XaB", "f.g > -0.12e+10", "f.g = 12", "f.g exists", "f.g == x", "f.g = tolower",
])
def test_accepted(text):
    expr = parse(text)
    # what was parsed prints back as a condition that parses to the same tree
    assert parse(str(expr)) == expr, str(expr)


@pytest.mark.parametrize("text, name, arg", [
    ('evt.arg["with space"] = x', "evt.arg", "with space"),
    ('x.y[""] = z', "x.y", ""),
])
def test_quoted_field_arguments(text, name, arg):
    # (a field prints as event keys spell it, `name[arg]` unquoted: no round trip here)
    expr = parse(text)
    assert isinstance(expr, nodes.Check)
    assert (expr.left.name, expr.left.arg) == (name, arg)


@pytest.mark.parametrize("text", [
    "a andb", "aand b", "a orb", "anot b", "a andnot b", "(a)andnot(b)",
    "and a", "a and b and", "a or b not", "a not b", "a and or b",
    "(a.b = 1", "a.b = b = 1", "a.b resembles x", "my_macro > 12",
    "f.g containsx", "f.g ExIsTs", "f.g exists x", "f.g === x", "f.g !== x",
    "f[] = 1", "f.g[] = 1", "f.g[ x ] = 1", 'f.g["x" = 1', "x.y = a,", "a=", "f.g in",
    "f.g in (a,)", "f.g in (a,,b)", "f.g in (,)", "f.g = (a)", "f.g startswith (a)",
    '"x"', "x.y = \"abc", 'x.y = "x""', "x.y = \"a \\'\"", "x.y = 'a \\\"'",
    'x.y = "\\x4"', 'x.y = "\\xZZ"', "f.g < abc", "f.g > x1", "", "   ",
    "val(f.g) exists", "b64 (f.g) = x", "fake(f.g) = x", "f.g = somefn(h.i)",
    "f.g = val(tolower(h.i))", "b64(val(f.g)) = x", "f.g in (a, b64(h.i))",
    "val(f.g)[x] = y",
])
def test_rejected(text):
    with pytest.raises(ConditionSyntaxError):
        parse(text)


def test_escapes():
    assert parse('x.y = "\\x41"').right.text == "A"
    assert parse("x.y = 'it\\'s'").right.text == "it's"
    assert parse('x.y = "a\\tb"').right.text == "a\tb"
    # libsinsp keeps "\ " as a backslash for old rules
    assert parse('x.y contains "\\ "').right.text == "\\"


def test_numbers_after_equals_are_strings():
    right = parse("x.y = 0x10").right
    assert isinstance(right, nodes.Value) and right.text == "0x10"


def test_field_arguments():
    assert parse('evt.arg["with space"] = x').left == nodes.Field("evt.arg", "with space")
    assert parse('x.y[""] = z').left == nodes.Field("x.y", "")
    assert parse("x.y = z").left == nodes.Field("x.y", None)


def test_quoted_values_are_marked():
    expr = parse("f.g in (a, 'b')")
    assert [v.quoted for v in expr.right.items] == [False, True]


@pytest.mark.parametrize("text, offset", [
    ("a.b = 1 and", 11),
    ("a.b = 1\n  and\n  c.d resembles x", 20),
    ("(a.b = 1", 8),
])
def test_error_positions(text, offset):
    with pytest.raises(ConditionSyntaxError) as err:
        parse(text)
    assert err.value.pos == offset


def test_error_says_what_was_expected():
    with pytest.raises(ConditionSyntaxError) as err:
        parse("a.b = 1 and")
    assert "expecting" in str(err.value)


def test_deep_nesting_is_a_clean_error():
    with pytest.raises(ConditionSyntaxError, match="exceeded max depth"):
        parse("(" * 100_000 + "a.b = 1" + ")" * 100_000)


def test_moderate_nesting_parses_and_compiles():
    depth = 300
    cond = ("(" + "a.b = 1 or not ") * depth + "c.d = 2" + ")" * depth
    assert nodes.depth(parse(cond)) > depth
