"""A reloaded rule set checked against the probes loaded at start."""

from __future__ import annotations

from dataclasses import replace

from enforcer.kernel.coverage import coverage_gaps
from enforcer.kernel.open_filter import open_filter_for
from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_text
from enforcer.sources.ebpf import plan
from enforcer.sources.probe import ProbeConfig
from enforcer.sources.syscalls import SYSCALLS

SHADOW = """\
- rule: Shadow read
  desc: d
  condition: evt.type in (open, openat, openat2) and fd.name = /etc/shadow
  output: o
  priority: WARNING
"""
MORE = SHADOW + """\
- rule: Ssh keys read
  desc: d
  condition: evt.type in (open, openat, openat2) and fd.name startswith /root/.ssh/
  output: o
  priority: WARNING
- rule: Unlink
  desc: d
  condition: evt.type = unlinkat and fd.name = /etc/passwd
  output: o
  priority: WARNING
"""


def engine(text: str) -> Engine:
    return Engine(load_text(text), hostname="h")


def started_with(text: str) -> ProbeConfig:
    """The probe config the agent would load for these rules (as Agent.__init__ does)."""
    first = engine(text)
    config, _ = plan(first.event_types(), frozenset(s.name for s in SYSCALLS), ProbeConfig())
    filt = open_filter_for(first.rules)
    if filt is not None:
        config = replace(config, open_prefixes=filt.prefixes, open_suffixes=filt.suffixes)
    return config


def test_same_rules_have_no_gap():
    assert coverage_gaps(engine(SHADOW), started_with(SHADOW)) == []


def test_new_syscall_and_new_paths_are_gaps():
    gaps = coverage_gaps(engine(MORE), started_with(SHADOW))
    assert gaps[0] == "syscalls not attached: unlinkat"
    assert gaps[1].startswith("open paths the kernel filter drops: '/root/.ssh/")


def test_a_rule_on_a_syscall_kept_for_the_fd_table_only_is_a_gap():
    """close is attached for the fd table whatever the rules, but reduced in the kernel to
    the closes of tracked descriptors: a new rule on every close needs them all."""
    closes = SHADOW + """\
- rule: Close
  desc: d
  condition: evt.type = close and proc.name = x
  output: o
  priority: WARNING
"""
    assert coverage_gaps(engine(closes), started_with(SHADOW)) == [
        "syscalls the kernel reduces to the fd table's records: close"]
    assert coverage_gaps(engine(closes), started_with(closes)) == []


def test_fewer_rules_need_no_restart():
    assert coverage_gaps(engine(SHADOW), started_with(MORE)) == []


def test_unfiltered_probe_sees_every_open():
    config = replace(started_with(SHADOW), open_prefixes=None)
    assert coverage_gaps(engine(SHADOW.replace("/etc/shadow", "/etc/gshadow")), config) == []


SENDS_WITH_ADDRESS = """\
- rule: Send to a named peer
  desc: d
  condition: evt.type in (sendto, sendmsg) and fd.name_changed=true and fd.sport = 53
  output: o
  priority: WARNING
"""
ANY_SEND = """\
- rule: Any send by nc
  desc: d
  condition: evt.type in (sendto, sendmsg) and proc.name = nc
  output: o
  priority: WARNING
"""


def test_sends_the_kernel_drops_are_a_gap_for_rules_that_need_them():
    config = replace(started_with(SENDS_WITH_ADDRESS), sends_need_address=True)
    assert coverage_gaps(engine(SENDS_WITH_ADDRESS), config) == []
    assert coverage_gaps(engine(ANY_SEND), config) == [
        "the new rules look at sends without an address, the kernel drops them"]
