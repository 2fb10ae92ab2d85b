"""Partial evaluation: known fields decided now, pending fields kept as a residue that is
equivalent to the full condition."""

from __future__ import annotations

import itertools

from enforcer.rules.evaluate import evaluate
from enforcer.rules.partial import reduce, residue_fields

from .helpers import load

TEXT = """\
- list: shells
  items: [bash, sh]
- macro: spawned
  condition: evt.type = execve
- macro: sensitive
  condition: fd.name startswith /etc/ or fd.name pmatch (/root)
- rule: r
  desc: d
  condition: >
    (evt.type = openat and sensitive and proc.name in (shells)
     and not user.name = root and container.id != host)
     or (spawned and proc.pname = sshd)
  output: o %fd.name
  priority: INFO
"""


def expr():
    return load(TEXT).rules["r"].expr


def test_residue_keeps_only_pending_checks():
    known = {"proc.name": "bash", "user.name": "alice", "container.id": "abc",
             "proc.pname": "init"}
    res = reduce(expr(), known, pending={"evt.type", "fd.name"})
    assert residue_fields(res) == {"evt.type", "fd.name"}


def test_decided_now():
    assert reduce(expr(), {"proc.name": "cat", "proc.pname": "init"},
                  pending={"fd.name"}) is False
    assert reduce(expr(), {"evt.type": "execve", "proc.pname": "sshd"},
                  pending={"fd.name"}) is True


def test_missing_known_field_is_missing():
    # container.id absent: `container.id != host` is false, like at evaluation time
    res = reduce(expr(), {"proc.name": "bash", "user.name": "alice", "proc.pname": "x"},
                 pending={"evt.type", "fd.name"})
    assert res is False or "container.id" not in residue_fields(res)


def test_residue_is_equivalent_to_the_condition():
    e = expr()
    knowns = [{"proc.name": p, "user.name": u, "container.id": c, "proc.pname": pp}
              for p, u, c, pp in itertools.product(["bash", "cat"], ["root", "alice"],
                                                   ["host", "abc"], ["sshd", "init"])]
    laters = [{"evt.type": t, "fd.name": f}
              for t, f in itertools.product(["openat", "execve", "close"],
                                            ["/etc/shadow", "/root/x", "/rootx", "/tmp"])]
    for known in knowns:
        res = reduce(e, known, pending={"evt.type", "fd.name"})
        for later in laters:
            event = {**known, **later}
            want = evaluate(e, event)
            got = res if isinstance(res, bool) else evaluate(res, event)
            assert got == want, (known, later, res)
