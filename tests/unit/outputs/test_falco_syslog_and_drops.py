"""Falco's syslog_output (a datagram per alert on the local syslog socket) and
syscall_event_drops (log / alert / ignore, at most max_burst at once, then `rate` per
second)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from enforcer.agent import DropMonitor
from enforcer.alert import Alert
from enforcer.outputs.syslog import SyslogOutput
from enforcer.priority import Priority

S = 1_000_000_000


def test_syslog_output_sends_falco_severity_and_the_alert_line(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(5)
    out = SyslogOutput(str(path), fmt="text")
    out.emit(Alert(rule="r", priority=Priority.CRITICAL, output="shell in pod", output_fields={},
                   time_ns=1_700_000_000 * S))
    message = server.recv(4096).decode()
    assert message.startswith("<10>")  # facility user (1) * 8 + critical (2)
    assert message.endswith(": Critical shell in pod") and "enforcer[" in message
    out.close()
    server.close()


def test_syslog_output_refuses_a_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        SyslogOutput(str(tmp_path / "none.sock"))


def test_drop_actions_are_rate_limited_as_falcos_token_bucket() -> None:
    alerts: list[Alert] = []
    monitor = DropMonitor(on_drop=("log", "alert"), rate=0.5, max_burst=2, alert=alerts.append)
    lines = [monitor.check(drops, t * S) for t, drops in ((0, 5), (0, 9), (1, 12), (3, 20))]
    # two at once (the burst), none at t=1 (half a token back), one at t=3 (1.5 back)
    assert [line is not None for line in lines] == [True, True, False, True]
    assert "5 system calls dropped" in lines[0] and "8 system calls dropped" in lines[3]
    assert [a.rule for a in alerts] == ["Falco internal: syscall event drop"] * 3
    assert alerts[0].priority == Priority.CRITICAL and alerts[0].output_fields["n_drops"] == 5
    assert (monitor.occurrences, monitor.actions, monitor.total) == (4, 3, 20)


@pytest.mark.parametrize(("actions", "logged", "alerted"), [
    (("ignore",), False, False), (("alert",), False, True), (("log",), True, False)])
def test_each_drop_action_alone(actions: tuple[str, ...], logged: bool, alerted: bool) -> None:
    alerts: list[Alert] = []
    monitor = DropMonitor(on_drop=actions, alert=alerts.append)
    assert (monitor.check(3, 0) is not None) == logged
    assert bool(alerts) == alerted


@pytest.mark.parametrize(("threshold", "acted"), [(0.0, True), (0.1, True), (0.2, False),
                                                  (1.0, False)])
def test_threshold_is_falcos_share_of_dropped_events_in_the_interval(
        threshold: float, acted: bool) -> None:
    """Falco acts when drops / (delivered + dropped) over the last check exceeds the
    threshold: here 20 dropped of 100 events (80 delivered) is 0.2, not above 0.2."""
    alerts: list[Alert] = []
    monitor = DropMonitor(on_drop=("log", "alert"), threshold=threshold, max_burst=5,
                          alert=alerts.append)
    monitor.check(0, 0, events=1000)  # the baseline: 1000 events delivered, no drop
    line = monitor.check(20, S, events=1080)
    assert (line is not None) == acted and bool(alerts) == acted
    assert monitor.intervals_with_drops == 1 and monitor.occurrences == int(acted)
    assert monitor.total == 20  # counted either way (and on /metrics)


def test_the_drop_alert_carries_falcos_breakdown_of_the_interval() -> None:
    """As Falco's alert: n_evts and n_drops of the interval, and the drops by Falco's kind
    (n_drops_buffer_<kind>_exit); ours stay numbers where Falco writes strings."""
    alerts: list[Alert] = []
    monitor = DropMonitor(on_drop=("alert",), max_burst=5, alert=alerts.append)
    monitor.check(0, 0, events=100, by_event={})
    monitor.check(6, S, events=130, by_event={"openat": 4, "fork": 1, "socket": 1})
    monitor.check(9, 2 * S, events=150, by_event={"openat": 5, "fork": 1, "socket": 1,
                                                   "execve": 2})
    fields = alerts[-1].output_fields
    assert fields["n_evts"] == 23 and fields["n_drops"] == 3  # 20 delivered + 3 dropped
    assert fields["n_drops_buffer_open_exit"] == 1
    assert fields["n_drops_buffer_execve_exit"] == 2
    assert fields["n_drops_buffer_clone_fork_exit"] == 0
    assert fields["n_drops_buffer_total"] == 3 and fields["n_drops_total"] == 9
