"""The in-kernel open filter derived from rules: sound (never drops what a rule could
match), and as narrow as the conditions allow."""

from __future__ import annotations

import pytest

from enforcer.kernel.open_filter import open_filter_for
from enforcer.resources import default_rules_dir
from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_rules, load_text
from enforcer.sources.probe import READABLE, TRUNCATING, WRITABLE

MACROS = """
- macro: open_read
  condition: (evt.type in (open,openat,openat2) and evt.is_open_read=true and fd.typechar='f')
- macro: open_write
  condition: (evt.type in (open,openat,openat2) and evt.is_open_write=true and fd.typechar='f')
"""


def _filter(rules_yaml: str):  # type: ignore[no-untyped-def]
    rs = load_text(MACROS + rules_yaml)
    return open_filter_for(Engine(rs).rules)


def _rule(cond: str, name: str = "r") -> str:
    return f"""
- rule: {name}
  desc: d
  condition: {cond}
  output: o
  priority: WARNING
"""


def test_exact_paths_and_directories_with_read_class() -> None:
    f = _filter(_rule("open_read and (fd.name in (/etc/shadow, /etc/sudoers) or "
                      "fd.directory in (/etc/pam.d))"))
    assert f is not None
    assert f.prefixes == {"/etc/shadow\0": READABLE, "/etc/sudoers\0": READABLE,
                          "/etc/pam.d/": READABLE}
    assert f.suffixes == {}


def test_flags_and_suffixes() -> None:
    f = _filter(_rule("open_write and (fd.directory in (/var/log) or fd.filename in "
                      "(syslog)) and evt.arg.flags contains O_TRUNC"))
    assert f is not None
    assert f.prefixes == {"/var/log/": WRITABLE & TRUNCATING}
    assert f.suffixes == {"/syslog": WRITABLE & TRUNCATING}


@pytest.mark.parametrize("cond", [
    "open_read and proc.name = cat",  # no path constraint at all
    "open_read and fd.name contains shadow",  # contains cannot be a prefix
    "open_read and not fd.name startswith /etc",  # negation widens
    "open_read and fd.name startswith etc/",  # relative value
    "open_read and tolower(fd.name) = /etc/shadow",  # transformer
])
def test_anything_not_understood_widens_to_every_path(cond: str) -> None:
    f = _filter(_rule(cond))
    assert f is not None and f.prefixes == {"": READABLE}  # writes can still be dropped


def test_a_rule_on_any_event_turns_the_filter_off() -> None:
    assert _filter(_rule("proc.name = cat")) is None
    assert _filter(_rule("evt.type = openat and proc.name = cat")) is None


def test_rules_about_other_events_leave_opens_droppable() -> None:
    f = _filter(_rule("evt.type = execve and proc.name = sh"))
    assert f is not None and f.prefixes == {} and f.suffixes == {}


def test_branches_for_other_event_types_do_not_widen() -> None:
    f = _filter(_rule("(open_read and fd.name = /etc/shadow) or "
                      "(evt.type = execve and proc.name = sh)"))
    assert f is not None and f.prefixes == {"/etc/shadow\0": READABLE}


def test_disabled_rules_do_not_count() -> None:
    text = _rule("open_read and proc.name = cat") + "  enabled: false\n"
    f = _filter(text + _rule("open_read and fd.name = /etc/shadow", "s"))
    assert f is not None and f.prefixes == {"/etc/shadow\0": READABLE}


def test_traversal_conditions_need_no_entry() -> None:
    # the kernel passes every raw path with `..`, so this rule needs nothing in the trie
    f = _filter(_rule("open_read and fd.name contains id_rsa and "
                      "fd.nameraw contains '../'"))
    assert f is not None and f.prefixes == {}


def test_upstream_stable_rules_give_a_narrow_filter() -> None:
    rs = load_rules([str(default_rules_dir())])
    f = open_filter_for(Engine(rs).rules)
    assert f is not None
    assert "/etc/shadow\0" in f.prefixes and f.prefixes["/etc/shadow\0"] & READABLE
    assert "" not in f.prefixes  # no "every path" entry
    assert "release_agent" in f.suffixes
    assert len(f.suffixes) <= 16


def test_sends_need_an_address_only_when_every_send_rule_says_so() -> None:
    from enforcer.kernel.open_filter import sends_need_address  # noqa: PLC0415

    stable = Engine(load_rules([str(default_rules_dir())])).rules
    assert sends_need_address(stable) is True  # the outbound macro wants fd.name_changed
    any_send = Engine(load_text(_rule("evt.type = sendto and proc.name = curl"))).rules
    assert sends_need_address(any_send) is False
    any_event = Engine(load_text(_rule("proc.name = curl"))).rules
    assert sends_need_address(any_event) is False
    negated = Engine(load_text(_rule("evt.type = sendto and not fd.name_changed = true"))).rules
    assert sends_need_address(negated) is False
