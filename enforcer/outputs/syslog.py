"""Falco's `syslog_output`: each alert as one syslog message on the local syslog socket.

As Falco's syslog(3) call: facility user, the rule's priority as the severity (Falco's
eight priorities are syslog's eight severities), the alert's line (Falco JSON, or the text
line) as the message, in the local socket's format (`<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG`,
no hostname: the local daemon adds it). Written natively on a unix datagram socket, so no
libc state is shared with the agent's threads."""

from __future__ import annotations

import os
import socket
import time

from enforcer.alert import Alert
from enforcer.outputs.formats import FALCO_DEFAULT_SHAPE, AlertShape, format_alert

DEFAULT_SOCKET = "/dev/log"
_FACILITY_USER = 1


class SyslogOutput:
    """Sends each alert to a local syslog socket (datagram); `emit` raises OSError when the
    daemon is gone, which the dispatcher counts as a failed delivery."""

    name = "syslog"

    def __init__(self, path: str = DEFAULT_SOCKET, fmt: str = "json", tag: str = "enforcer",
                 shape: AlertShape = FALCO_DEFAULT_SHAPE):
        self.path = path
        self.fmt = fmt
        self.shape = shape
        self.tag = tag
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.connect(path)
        except OSError:
            self._sock.close()
            raise

    def emit(self, alert: Alert) -> None:
        severity = int(alert.priority)  # Falco priority order = syslog severity order
        stamp = time.strftime("%b %e %H:%M:%S", time.localtime(alert.time_ns / 1e9))
        line = format_alert(alert, self.fmt, self.shape)
        message = f"<{_FACILITY_USER * 8 + severity}>{stamp} {self.tag}[{os.getpid()}]: {line}"
        self._sock.send(message.encode("utf-8", "replace"))

    def close(self) -> None:
        self._sock.close()
