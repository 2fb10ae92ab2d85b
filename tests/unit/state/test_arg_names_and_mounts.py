"""Fields that Falco resolves against the state, as its upstream rules read them:
evt.arg.uid is a user name (`Non sudo setuid`'s `evt.arg.uid=nobody`), and
container.mount.dest[SRC] is looked up by the mount's source (`Launch Sensitive Mount
Container`'s `container.mount.dest[/proc*]`)."""

from __future__ import annotations

import pwd
import time
from pathlib import Path

import pytest

from enforcer.sources import syscalls as sc
from enforcer.sources.decode import decode, pack
from enforcer.state.live_event import LiveEvent
from enforcer.state.tracker import Tracker
from tests.unit.agent.test_set_aside import _state

CID = "127a8590207428f1c575b1d4646d8239c264dc1afc2272c463f3f5f5cf152076"
DOC = {"Name": "/app", "Config": {"Image": "shop/web:1"},
       "Mounts": [{"Source": "/proc", "Destination": "/host/proc", "RW": False},
                  {"Source": "/srv/data", "Destination": "/data"}]}


def _tracker(tmp_path: Path, cgroup: str) -> Tracker:
    return _state(tmp_path, lambda full_id: DOC, hold=5, cgroup=cgroup)


def _event(tracker: Tracker, name: str, ints: tuple[int, ...]) -> LiveEvent:
    ev = tracker.apply(decode(pack(code=sc.CODES[name], tgid=200, comm="sh", ints=ints)))
    assert ev is not None
    return ev


@pytest.mark.parametrize("uid", [0, pwd.getpwnam("nobody").pw_uid])
def test_a_uid_argument_is_the_user_name(tmp_path: Path, uid: int) -> None:
    ev = _event(_tracker(tmp_path, "0::/user.slice\n"), "setuid", (uid,))
    assert ev.get("evt.arg.uid") == pwd.getpwuid(uid).pw_name
    assert ev.get("evt.rawarg.uid") == uid
    assert f"uid={pwd.getpwuid(uid).pw_name}" in ev.get("evt.args")


def test_an_unknown_uid_is_na_and_minus_one_none(tmp_path: Path) -> None:
    tracker = _tracker(tmp_path, "0::/user.slice\n")
    unknown = next(u for u in range(4_000_000, 4_100_000) if not _known(u))
    assert _event(tracker, "setuid", (unknown,)).get("evt.arg.uid") == "<NA>"
    ev = _event(tracker, "setresuid", (0xFFFFFFFF, 0, 0xFFFFFFFF))
    assert (ev.get("evt.arg.ruid"), ev.get("evt.arg.euid")) == ("<NONE>", "root")


def _known(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_mount_fields_look_up_the_other_end(tmp_path: Path) -> None:
    ev = _event(_tracker(tmp_path, f"0::/libpod_parent/libpod-{CID}\n"), "setuid", (0,))
    deadline = time.monotonic() + 10  # the registry asks the runtime on its own thread
    while ev.container().pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ev.get("container.name") == "app"
    assert ev.get("container.mount.dest[/proc*]") == "/host/proc"  # by source, a glob
    assert ev.get("container.mount.dest[/srv/data]") == "/data"
    assert ev.get("container.mount.dest[/data]") is None  # a destination is no source
    assert ev.get("container.mount.source[/host/*]") == "/proc"
    assert ev.get("container.mount.dest[1]") == "/data"
    assert ev.get("container.mount.dest[2]") is None
