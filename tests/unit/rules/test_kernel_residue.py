"""Partial evaluation for the in-kernel kill: TRUE/FALSE/residue, what the kernel can check
exactly (and why not), and a differential check against the engine: for every process
and open tried, the kernel model kills only when the engine matches, and always when the
engine matches an absolute, normal path."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from enforcer.kernel import residue as pe
from enforcer.kernel.kill_tables import TYPE_BITS, KillTables
from enforcer.rules import nodes
from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_rules
from enforcer.sources.decode import open_flags_text
from tests.unit.rules.helpers import load, rule_yaml

RULES = Path(__file__).resolve().parents[2] / "data" / "falco-rules" / "falco_rules.yaml"
UNTRUSTED = "Read sensitive file untrusted"


class Ev(dict):
    def get(self, key, default=None):
        value = dict.get(self, key)
        return default if value is None else value


@pytest.fixture(scope="module")
def upstream():
    return load_rules([str(RULES)])


def cat_fields(**over):
    fields = {"proc.name": "cat", "proc.pname": "bash", "proc.cmdline": "cat /etc/shadow",
              "proc.args": "/etc/shadow", "proc.aname[1]": "bash", "proc.aname[2]": "sshd",
              "proc.aname[3]": "systemd", "proc.pcmdline": "bash", "container.id": "host",
              "proc.exepath": "/usr/bin/cat", "user.name": "root", "user.uid": 0}
    fields.update(over)
    return Ev(fields)


def one(condition: str, prelude: str = ""):
    return next(iter(load(prelude + rule_yaml(condition)).rules.values()))


def test_three_values():
    rule = one("evt.type = openat and proc.name = cat and fd.name = /etc/shadow")
    assert pe.partial(rule.expr, pe.process_decider(cat_fields(**{"proc.name": "ls"}))) is False
    residue = pe.partial(rule.expr, pe.process_decider(cat_fields()))
    assert str(residue) == "(evt.type = openat and fd.name = /etc/shadow)"
    rule = one("evt.type = openat and (proc.name = cat or fd.name = /x)")
    assert str(pe.partial(rule.expr, pe.process_decider(cat_fields()))) == "evt.type = openat"
    rule = one("proc.name = cat or evt.num = 0")
    assert pe.partial(rule.expr, pe.process_decider(cat_fields())) is True
    assert pe.partial(rule.expr, pe.static_decider) == pe.partial(
        one("proc.name = cat").expr, pe.static_decider)


def test_upstream_untrusted_reader_residue(upstream):
    rule = upstream.rules[UNTRUSTED]
    assert pe.rule_eligibility(rule) is None
    residue = pe.partial(rule.expr, pe.process_decider(cat_fields()))
    assert str(residue) == (
        "((evt.type in (open, openat, openat2) and evt.is_open_read = true and "
        'fd.typechar = "f" and fd.num >= 0) and (fd.name in (/etc/shadow, /etc/sudoers, '
        "/etc/pam.conf, /etc/security/pwquality.conf) or fd.directory in (/etc/sudoers.d, "
        "/etc/pam.d)))")
    conj = pe.conjuncts(residue, rule.event_types)
    assert len(conj) == 2
    assert {c.types for c in conj} == {frozenset({"open", "openat", "openat2"})}
    assert all(c.results == pe.OK for c in conj)  # fd.num >= 0: decided at syscall exit
    assert {frozenset(c.paths_all) for c in conj} == {
        frozenset({frozenset({("exact", "/etc/shadow"), ("exact", "/etc/sudoers"),
                              ("exact", "/etc/pam.conf"),
                              ("exact", "/etc/security/pwquality.conf")})}),
        frozenset({frozenset({("dir", "/etc/sudoers.d"), ("dir", "/etc/pam.d")})})}
    # trusted programs, and the exceptions that read the ancestors, leave nothing
    for over in ({"proc.name": "sshd"}, {"proc.pname": "qualys-cloud-ag"},
                 {"proc.aname[3]": "google_accounts"},
                 {"proc.name": "perl", "proc.cmdline": "perl /usr/bin/updmap x"}):
        assert pe.partial(rule.expr, pe.process_decider(cat_fields(**over))) is False
    # runuser may read /etc/pam.d: its residue keeps only the other paths
    runuser = pe.conjuncts(pe.partial(rule.expr, pe.process_decider(
        cat_fields(**{"proc.name": "runuser"}))), rule.event_types)
    assert all(c.paths_none == frozenset({frozenset({("dir", "/etc/pam.d")})})
               for c in runuser)


@pytest.mark.parametrize(("condition", "reason"), [
    ("evt.type = openat and fd.name contains shadow", "path-prefix checks"),
    ("evt.type = openat and fd.name regex '/etc/.*'", "path-prefix checks"),
    ("evt.type = openat and fd.name glob '/etc/*'", "path-prefix checks"),
    ("evt.type = openat and fd.nameraw = /etc/shadow", "raw path"),
    ("evt.type = openat and fd.filename = shadow", "file name"),
    ("evt.type = openat and proc.cwd = /root and fd.name = /x", "can change after exec"),
    ("evt.type = openat and fd.name = /x and fd.num = 3", "which fd"),
    ("evt.type = openat and evt.arg.flags contains O_CLOEXEC", "flags"),
    ("evt.type = openat and fd.name pmatch (/etc/*)", "wildcards"),
    ("evt.type = accept and fd.sport = 22", "this rule matches accept"),
    ("evt.type = openat and toupper(fd.name) = /X", "transforms"),
])
def test_ineligible_rules_say_why(condition, reason):
    assert reason in (pe.rule_eligibility(one(condition)) or "")


def test_eligible_shapes():
    for condition in (
        "evt.type in (open, openat) and fd.name startswith /etc/ and evt.is_open_write = true",
        "evt.type = openat and not fd.name pmatch (/tmp) and evt.arg.flags contains O_CREAT",
        "evt.type = openat2 and fd.directory = /root/.ssh and fd.typechar = f",
        "evt.type = creat and fd.num < 0 and user.name = root",
    ):
        assert pe.rule_eligibility(one(condition)) is None, condition


def test_child_template_by_comm(upstream):
    rule = upstream.rules[UNTRUSTED]
    known = {"proc.pname": "bash", "proc.aname[1]": "bash", "proc.aname[2]": "sshd",
             "proc.aname[3]": "systemd", "proc.aname[4]": None, "proc.pcmdline": "bash",
             "container.id": "host", "container.image.repository": None}

    def view(key):
        if key in pe.CHILD_OWN:
            return False, None
        return key in known, known.get(key)

    comms = pe.comm_literals(rule.expr)
    assert {"sshd", "perl", "runuser"} <= comms
    other = pe.partial(rule.expr, pe.child_decider(view, None))
    assert pe.conjuncts(other, rule.event_types)  # any other comm: the file paths remain
    assert pe.partial(rule.expr, pe.child_decider(view, "sshd")) is False
    # perl's exceptions read its arguments, which the kernel does not know at exec
    with pytest.raises(pe.Ineligible):
        pe.conjuncts(pe.partial(rule.expr, pe.child_decider(view, "perl")), rule.event_types)


# --- differential: the kernel model against the engine ------------------------------------
def kernel_kills(tables: KillTables, bitmap: int, etype: str, flags: int, raw: str,
                 ret: int) -> bool:
    """bpf/enforce.c's judge(), in Python."""
    acc = flags & 3
    cls = ((acc in (0, 2)) | (acc in (1, 2)) << 1 | bool(flags & 0o1000) << 2
           | bool(flags & 0o100) << 3 | bool(flags & 0o200000) << 4
           | ((flags & 0o20200000) == 0o20200000) << 5)
    data = raw.encode()
    normal = pe._normal(raw)
    bits = 0
    if normal:
        entries = tables.lpm_entries()
        keys = [k for k in entries if (data + b"\0").startswith(k)]
        if keys:
            key = max(keys, key=len)
            always, noslash = entries[key]
            bits = always | (noslash if b"/" not in data[len(key):] else 0)
    for i, row in enumerate(tables.rows):
        if not bitmap >> i & 1:
            continue
        if not row.types & TYPE_BITS[etype] or not row.classes >> cls & 1:
            continue
        if not row.results & pe.result_bit(ret):
            continue
        if row.uses_path and (not normal or bits & row.paths_all != row.paths_all
                              or bits & row.paths_none):
            continue
        return True
    return False


PATHS = ["/etc/shadow", "/etc/shadow2", "/etc/pam.d/sshd", "/etc/pam.d/x/y", "/etc/pam.d",
         "/etc/sudoers.d/a", "/etc//shadow", "/etc/./shadow", "etc/shadow", "/etc/hostname",
         "/tmp/etc/shadow", "/etc/pam.conf", "/etc/sudoers", "/etc/security/pwquality.conf",
         "/tmp", "/tmp/", "/tmpx/a", "/tmp/a/b", "/root/.ssh/id", "/root/.sshx", "/"]
FLAGS = [0, 1, 2, 3, 0o100 | 1, 0o1000 | 2, 0o200000, 0o20200000 | 2, 0o2000000]


def engine_event(fields: Ev, etype: str, flags: int, raw: str, ret: int) -> Ev:
    name = os.path.normpath(os.path.join("/", raw)) if raw.startswith("/") else "/" + raw
    name = "/" + name.lstrip("/")
    ev = Ev(fields)
    ev.update({"evt.type": etype, "evt.num": 7, "fd.name": name, "fd.nameraw": raw,
               "fd.directory": os.path.dirname(name) or "/",
               "evt.is_open_read": (0o1101 if etype == "creat" else flags) & 3 in (0, 2),
               "evt.is_open_write": (0o1101 if etype == "creat" else flags) & 3 in (1, 2),
               "fd.typechar": "d" if flags & 0o200000 and etype != "creat" else "f",
               "fd.num": ret if ret >= 0 else -1})
    if etype != "creat":
        ev["evt.arg.flags"] = open_flags_text(flags)
    return ev


CONDITIONS = [
    "evt.type in (open, openat) and fd.name startswith /etc/ and evt.is_open_write = true",
    "evt.type in (openat, creat) and not fd.name pmatch (/tmp) and "
    "evt.arg.flags contains O_CREAT",
    "evt.type in (openat, openat2) and (fd.directory = /root/.ssh or fd.name = /) "
    "and fd.typechar = f and not evt.arg.flags contains O_RDONLY",
    "evt.type = openat and fd.num < 0 and not fd.directory in (/etc, /tmp)",
    "evt.type = openat and (evt.arg.flags contains O_RDWR or evt.arg.flags contains "
    "O_TMPFILE or evt.arg.flags contains O_DIRECTORY)",
    "(evt.type = openat and fd.name startswith /etc/ and fd.num >= 0) or "
    "(evt.type = connect and fd.sport = 4444 and evt.rawres >= 0)",
]


@pytest.mark.parametrize("condition", CONDITIONS + [UNTRUSTED])
def test_kernel_model_agrees_with_the_engine(upstream, condition):
    if condition == UNTRUSTED:
        rule = upstream.rules[UNTRUSTED]
        engine = Engine(upstream, hostname="t")
    else:
        rs = load(rule_yaml(condition, name="r"))
        rule = rs.rules["r"]
        engine = Engine(rs, hostname="t")
    assert pe.rule_eligibility(rule) is None
    tables = KillTables([rule.name])
    kills = 0
    for over in ({}, {"proc.name": "sshd"}, {"proc.name": "runuser"}):
        fields = cat_fields(**over)
        conj = pe.conjuncts(pe.partial(rule.expr, pe.process_decider(fields)),
                            rule.event_types)
        bitmap = 0
        for c in conj:
            bitmap |= 1 << tables.slot(0, c)[0]
        for etype, flags, raw, ret in itertools.product(
                ("open", "openat", "openat2", "creat"), FLAGS, PATHS, (3, -2)):
            ev = engine_event(fields, etype, flags, raw, ret)
            matched = any(a.rule == rule.name for a in engine.evaluate(ev))
            killed = kernel_kills(tables, bitmap, etype, flags, raw, ret)
            kills += killed
            where = (over, etype, oct(flags), raw, ret)
            assert not killed or matched, f"false kill {where}"
            if pe._normal(raw):
                assert killed == matched, f"missed {where}"
    assert kills > 0


def test_walk_sees_every_check_once(upstream):
    rule = upstream.rules[UNTRUSTED]
    checks = [n for n in nodes.walk(rule.expr) if isinstance(n, nodes.Check)]
    assert checks and "proc.name" in pe.process_fields(rule.expr)
    assert pe.ancestor_depth(rule.expr) == 4
