"""Operators by field type (upstream_tests.md §8), evaluated through the compiled engine."""

from __future__ import annotations

import pytest

from enforcer.errors import RuleError

from .helpers import load, matches, rule_yaml

FILE = {"evt.type": "openat", "fd.name": "/opt/dir/SUBDIR/file.txt", "fd.num": 3,
        "proc.name": "syscall", "evt.arg.flags": "O_WRONLY|O_CREAT", "evt.rawres": -22,
        "evt.buffer": "hel\x00lo", "fd.sip": "142.251.111.147", "fd.snet": "10.1.2.3",
        "proc.aname": ["bash", "sshd", "systemd"], "fd.types": ["file", "ipv4"],
        "evt.is_open_read": True, "user.name": "root"}


@pytest.mark.parametrize("cond, expected", [
    # missing fields: every comparison false, != included; exists false
    ("proc.cwd = /", False), ("proc.cwd != /", False), ("not proc.cwd = /", True),
    ("proc.cwd exists", False), ("proc.name exists", True), ("proc.cwd in (a, b)", False),
    ("proc.cwd startswith /", False), ("not proc.cwd startswith /", True),
    ("proc.pid < 10", False), ("proc.pid >= 0", False),
    # strings
    ("fd.name contains /dir", True), ("fd.name icontains /subdir", True),
    ("fd.name icontains notthis", False), ("fd.name contains /subdir", False),
    ("evt.arg.flags contains O_CREAT", True),
    ("fd.name startswith /opt/", True), ("fd.name startswith /OPT", False),
    ("fd.name endswith .txt", True), ("fd.name endswith .TXT", False),
    ("fd.name = /opt/dir/SUBDIR/file.txt", True), ("fd.name == /opt/dir/SUBDIR/file.txt", True),
    ("fd.name != /opt/dir/SUBDIR/file.txt", False), ("fd.name != /x", True),
    ("fd.name glob /opt/*/file.txt", True), ("fd.name glob '/opt/d?r/*'", True),
    ("fd.name glob /opt/dir/[A-Z]*/file.txt", True), ("fd.name glob *.log", False),
    ("fd.name iglob /OPT/DIR/*", True), ("fd.name glob /OPT/DIR/*", False),
    ("fd.name in (/a, /opt/dir/SUBDIR/file.txt)", True), ("fd.name in (/a, /b)", False),
    ("fd.name in ()", False), ("fd.name intersects (/opt/dir/SUBDIR/file.txt)", True),
    # pmatch: component-wise prefixes, with wildcards per component
    ("fd.name pmatch (/opt/dir)", True), ("fd.name pmatch (/opt/dir2)", False),
    ("fd.name pmatch (/opt/di)", False), ("fd.name pmatch (/opt/*)", True),
    ("fd.name pmatch (/opt/*/SUBDIR)", True), ("fd.name pmatch (/opt/di?/SUBDIR)", True),
    ("fd.name pmatch (/opt/di[r]/SUBDIR)", True), ("fd.name pmatch (/opt/di[!r]/SUBDIR)", False),
    ("fd.name pmatch (/opt/*/SUBDIR2)", False), ("fd.name pmatch (/opt/*/*/deeper)", False),
    ("fd.name pmatch (/x, /opt/dir/SUBDIR/file.txt)", True), ("fd.name pmatch (/)", True),
    # regex: full match
    ("proc.name regex 'syscal.*'", True), ("proc.name regex 'yscal.*'", False),
    ("proc.name regex '.*yscal'", False), ("proc.name regex '^[s]{1}ysca[l]{2}$'", True),
    # numbers, signed
    ("evt.rawres < 0", True), ("evt.rawres < -1", True), ("evt.rawres > -65535", True),
    ("evt.rawres > 4294967295", False), ("evt.rawres = -22", True),
    ("fd.num >= 0", True), ("fd.num = 3", True), ("fd.num != 3", False),
    ("fd.num in (1, 2, 3)", True), ("fd.num < 0x10", True), ("fd.num > 0x2", True),
    # bools
    ("evt.is_open_read = true", True), ("evt.is_open_read = false", False),
    ("evt.is_open_read != true", False), ("evt.is_open_write = false", False),
    # buffers
    ("evt.buffer bcontains 6c00", True), ("evt.buffer bcontains 656C", True),
    ("evt.buffer bstartswith 68", True), ("evt.buffer bstartswith 65", False),
    ("evt.buffer contains lo", True),
    # IP addresses and networks
    ("fd.sip = 142.251.111.147", True), ("fd.sip == 142.251.111.148", False),
    ("fd.sip != 142.251.111.147", False), ("fd.sip in (1.1.1.1, 142.251.111.147)", True),
    ("fd.snet = 10.0.0.0/8", True), ("fd.snet != 10.0.0.0/8", False),
    ("fd.snet in (192.168.0.0/16, 10.1.0.0/16)", True), ("fd.snet = 11.0.0.0/8", False),
    ("fd.snet = ::1/128", False),
    # ancestors: no index = any ancestor; [1] = parent
    ("proc.aname = sshd", True), ("proc.aname = nginx", False),
    ("proc.aname in (nginx, systemd)", True), ("proc.aname[1] = bash", True),
    ("proc.aname[2] = sshd", True), ("proc.aname[4] = x", False),
    ("proc.aname[0] = syscall", True), ("proc.aname startswith ssh", True),
    # list-valued fields: in = every value, intersects = any
    ("fd.types in (file, ipv4, ipv6)", True), ("fd.types in (file)", False),
    ("fd.types intersects (ipv4)", True), ("fd.types intersects (unix)", False),
    ("fd.types exists", True),
])
def test_operator(cond, expected):
    assert matches(cond, FILE) is expected


def test_ipv6_by_value():
    ev = {"evt.type": "connect", "fd.sip": "2001:4860:4860:0::8888"}
    assert matches("fd.sip = 2001:4860:4860::8888", ev)
    assert matches("fd.sip in (::1, 2001:4860:4860::8888)", ev)
    assert not matches("fd.sip = ::1", ev)


def test_explicit_ancestor_key_wins():
    ev = {"evt.type": "execve", "proc.aname": ["a", "b"], "proc.aname[2]": "z"}
    assert matches("proc.aname[2] = z", ev)


def test_field_to_field_val():
    ev = {"evt.type": "x", "proc.name": "bash", "proc.pname": "bash", "proc.exe": "BASH"}
    assert matches("proc.name = val(proc.pname)", ev)
    assert not matches("proc.name = proc.pname", ev)  # a string literal "proc.pname"
    assert matches("proc.name = tolower(proc.exe)", ev)
    assert not matches("proc.name = val(proc.cwd)", ev)  # missing right side
    assert not matches("proc.name != val(proc.cwd)", ev)


@pytest.mark.parametrize("cond", [
    "proc.pid contains 1", "proc.pid startswith 1", "proc.pid glob 1*", "proc.pid pmatch (/)",
    "proc.pid regex 1", "proc.pid icontains 1", "proc.pid = abc", "proc.pid < abc_x",
    "evt.is_open_read contains t", "evt.is_open_read < 1", "evt.is_open_read = maybe",
    "fd.name bcontains 41", "fd.name bstartswith 41",
    "evt.buffer icontains x", "evt.buffer glob x", "evt.buffer pmatch (x)",
    "evt.buffer regex x", "evt.buffer < 1",
    "evt.buffer bcontains 2", "evt.buffer bcontains 2g", "evt.buffer bstartswith 123Z",
    "fd.sip contains 1", "fd.sip startswith 1", "fd.sip = not_an_ip", "fd.snet = 10.0.0.0/99",
    "fd.types = file", "fd.types contains x",
    "proc.name = \"\\x00\"", "proc.name regex '('",
    "proc.name = val(evt.is_open_read)", "proc.name regex val(proc.pname)",
    "toupper(proc.pid) = 1", "proc.colour = red", "proc.aname[x] = y",
])
def test_type_errors(cond):
    with pytest.raises(RuleError):
        load(rule_yaml(cond))


def test_buffer_keeps_nul_bytes():
    ev = {"evt.type": "write", "evt.buffer": "a\x00b"}
    assert matches('evt.buffer = "a\\x00b"', ev)
    assert not matches('evt.buffer = "a\\x00c"', ev)


def test_wrong_value_type_in_event_does_not_match_and_is_counted():
    from enforcer.rules.engine import Engine
    engine = Engine(load(rule_yaml("fd.num > 2")), hostname="h")
    assert engine.evaluate({"evt.type": "openat", "fd.num": "three"}) == []
    assert engine.evaluation_errors["r"] == 1


@pytest.mark.parametrize("cond, expected", [
    ("proc.name startswith anyof (sys, x)", True), ("proc.name startswith anyof (x, y)", False),
    ("proc.name startswith allof (sys, sysc)", True), ("proc.name startswith allof (sys, x)",
                                                       False),
    ("proc.name startswith oneof (sys, sysc)", False), ("proc.name startswith oneof (sys, x)",
                                                        True),
    ("proc.name = anyof ()", False), ("proc.name = allof ()", False),
    ("proc.name = oneof ()", False), ("proc.name != anyof (syscall, x)", True),
    ("proc.name != allof (syscall, x)", False), ("fd.name glob anyof (*.txt, *.log)", True),
    ("tolower(fd.name) contains allof (subdir, opt)", True),
    ("proc.cwd = anyof (a, b)", False), ("proc.cwd != anyof (a, b)", False),
    ("proc.name = oneof", False), ("proc.aname = anyof (x, sshd)", True),
    ("fd.num = anyof (1, 3)", True),
])
def test_modifiers(cond, expected):
    assert matches(cond, FILE) is expected


def test_modifier_with_a_list_name():
    prelude = "- list: prefixes\n  items: [sys, zzz]\n"
    assert matches("proc.name startswith oneof prefixes", FILE, prelude)
    assert matches("proc.name in prefixes or proc.name startswith anyof prefixes", FILE,
                   prelude)


@pytest.mark.parametrize("cond", [
    "proc.name in oneof (a)", "fd.num >= oneof (1)", "proc.name == oneof x y",
    "fd.num = anyof (a)", "proc.name ==oneof (a)",
])
def test_modifier_errors(cond):
    with pytest.raises(RuleError):
        load(rule_yaml(cond))
