"""Closing loaded programs from two threads at once must close each descriptor once: the
second close of a number the first already gave back closes whatever file of this process
got that number next (a pipe to a child, another library's epoll), which is how a test's
shell once lost its stdin while gRPC lost its epoll."""

from __future__ import annotations

import os
import threading

import pytest

from enforcer.adapters import libbpf as lb


def _init_without_kernel(self: lb.LoadedBpf, maps: object, tracepoints: dict[bytes, int],
                         programs: dict[str, int]) -> None:
    self.maps = {}
    self.tracepoint_fds = dict(tracepoints)
    self.funcs = {name: lb._Program(fd) for name, fd in programs.items()}
    self._rings = []
    self._readers = []


def test_two_closes_at_once_close_every_descriptor_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(2)]
    init = lb.LoadedBpf.__init__
    monkeypatch.setattr(lb.LoadedBpf, "__init__", _init_without_kernel)
    loaded = lb.LoadedBpf([], {}, {"exit_openat": fds[0], "exit_close": fds[1]})
    monkeypatch.setattr(lb.LoadedBpf, "__init__", init)
    closed: list[int] = []
    real_close = os.close
    in_close = threading.Event()
    gate = threading.Event()

    def counting_close(fd: int) -> None:
        closed.append(fd)
        if threading.current_thread() is first and not gate.is_set():
            in_close.set()
            gate.wait(10)  # the first close, held in the middle of its work
        real_close(fd)

    monkeypatch.setattr(lb.os, "close", counting_close)
    first = threading.Thread(target=loaded.close)
    first.start()
    assert in_close.wait(10)
    second = threading.Thread(target=loaded.close)
    second.start()
    second.join(10)
    gate.set()
    first.join(10)
    assert not first.is_alive() and not second.is_alive()
    assert sorted(closed) == sorted(fds)  # each program's descriptor, once
    loaded.close()  # and a later close does nothing
    assert sorted(closed) == sorted(fds)
