"""The process table against a fake /proc, and the live event's derived fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from enforcer.sources import syscalls as sc
from enforcer.sources.decode import decode, pack
from enforcer.state.containers import ContainerRegistry
from enforcer.state.live_event import StateContext
from enforcer.state.process_table import ProcessTable, resolve
from enforcer.state.tracker import Tracker

CID = "127a8590207428f1c575b1d4646d8239c264dc1afc2272c463f3f5f5cf152076"


def _proc(root: Path, pid: int, comm: str, ppid: int, argv: list[str], cwd: str = "/",
          cgroup: str = "0::/", tty: int = 0) -> None:
    d = root / str(pid)
    d.mkdir()
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} {tty} -1 0 0 0 0 0 0 0 0 0 "
                            "20 0 1 0 100 0 0")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "status").write_text(f"Name:\t{comm}\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
                              f"NSpid:\t{pid}\n")
    (d / "cgroup").write_text(cgroup + "\n")
    (d / "loginuid").write_text("4294967295")
    (d / "cwd").symlink_to(cwd)
    (d / "exe").symlink_to("/usr/bin/" + comm)


def _fake_proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    (root / "stat").write_text("cpu 0\nbtime 1700000000\n")
    _proc(root, 1, "init", 0, ["/sbin/init"])
    _proc(root, 100, "bash", 1, ["bash"], cwd="/root", tty=34816)
    _proc(root, 200, "sh", 1, ["sh"], cgroup=f"0::/libpod_parent/libpod-{CID}")
    return root


def _tracker(root: Path) -> Tracker:
    table = ProcessTable(str(root))
    table.seed()
    return Tracker(StateContext(table=table, containers=ContainerRegistry(None),
                                proc_root=str(root), hostname="h"))


def test_seed_reads_every_process(tmp_path: Path) -> None:
    table = ProcessTable(str(_fake_proc(tmp_path)))
    assert table.seed() == 3
    bash = table.get(100)
    assert bash is not None and bash.comm == "bash" and bash.ppid == 1
    assert bash.cwd == "/root" and bash.tty == 34816 and bash.exepath == "/usr/bin/bash"
    assert table.get(200).cgroup.container_id == CID[:12]


def test_fork_exec_open_gives_parent_ancestors_and_resolved_paths(tmp_path: Path) -> None:
    tr = _tracker(_fake_proc(tmp_path))
    assert tr.apply(decode(pack(code=sc.EV_FORK, tgid=100, ints=(101, 100)))) is None
    ev = tr.apply(decode(pack(code=sc.CODES["execve"], tgid=101, comm="cat",
                              path1="/usr/bin/cat", argv=("cat", "shadow"))))
    assert ev.get("proc.name") == "cat" and ev.get("proc.pname") == "bash"
    assert ev.get("proc.args") == "shadow" and ev.get("proc.cmdline") == "cat shadow"
    assert ev.get("proc.exepath") == "/usr/bin/cat"  # not alive in the fake /proc
    assert ev.get("proc.aname") == ["bash", "init"]
    assert ev.get("proc.aname[2]") == "init" and ev.get("proc.apid[1]") == 100
    assert ev.get("proc.tty") == 34816  # inherited from bash
    assert ev.get("proc.cwd") == "/root/"
    ev = tr.apply(decode(pack(code=sc.CODES["openat"], tgid=101, comm="cat", ret=3,
                              ints=(-100, 0, 0), path1="../etc/./shadow")))
    assert ev.get("fd.name") == "/etc/shadow" and ev.get("fd.nameraw") == "../etc/./shadow"
    assert ev.get("fd.directory") == "/etc" and ev.get("fd.filename") == "shadow"
    assert ev.get("fd.typechar") == "f" and ev.get("fd.num") == 3
    assert ev.get("evt.is_open_read") is True and ev.get("evt.is_open_write") is False
    assert ev.get("user.loginuid") == -1 and ev.get("container.id") == "host"
    assert ev.get("evt.num") == 2 and ev.get("nonexistent.field") is None


def test_chdir_changes_where_relative_paths_resolve(tmp_path: Path) -> None:
    tr = _tracker(_fake_proc(tmp_path))
    tr.apply(decode(pack(code=sc.CODES["chdir"], tgid=100, path1="/var/log")))
    ev = tr.apply(decode(pack(code=sc.CODES["openat"], tgid=100, ret=-2, ints=(-100, 0o1101),
                              path1="x.log")))
    assert ev.get("fd.name") == "/var/log/x.log"
    assert ev.get("fd.num") == -1 and ev.get("evt.res") == "ENOENT"
    assert ev.get("evt.is_open_write") is True


def test_exit_keeps_the_parent_for_late_children(tmp_path: Path) -> None:
    tr = _tracker(_fake_proc(tmp_path))
    tr.apply(decode(pack(code=sc.EV_FORK, tgid=100, ints=(101, 100))))
    tr.apply(decode(pack(code=sc.EV_EXIT, tgid=100)))
    ev = tr.apply(decode(pack(code=sc.CODES["execve"], tgid=101, comm="ls", path1="/bin/ls",
                              argv=("ls",))))
    assert ev.get("proc.pname") == "bash"


def test_container_identity_from_the_process(tmp_path: Path) -> None:
    tr = _tracker(_fake_proc(tmp_path))
    ev = tr.apply(decode(pack(code=sc.CODES["openat"], tgid=200, ret=3, ints=(-100, 0),
                              path1="/etc/shadow")))
    assert ev.get("container.id") == CID[:12]
    assert ev.get("container.name") is None  # no runtime API in this test


def test_resolve() -> None:
    assert resolve("/a/b", "../c") == "/a/c"
    assert resolve("/", "x//y/./z") == "/x/y/z"
    assert resolve("/tmp", "/etc/../etc/shadow") == "/etc/shadow"


def test_exec_of_a_process_whose_exe_reads_back_as_root_keeps_the_exec_path(
        tmp_path: Path) -> None:
    """A container process that exits at once, its root torn down, has /proc/PID/exe -> "/".
    That is no executable: proc.exepath stays the path the exec named (seen live: a dropped
    binary reported as "/" and, with it, every container exec as upper-layer)."""
    root = _fake_proc(tmp_path)
    (root / "101").mkdir()
    (root / "101" / "exe").symlink_to("/")
    tr = _tracker(root)
    tr.apply(decode(pack(code=sc.EV_FORK, tgid=100, ints=(101, 100))))
    ev = tr.apply(decode(pack(code=sc.CODES["execve"], tgid=101, comm="dropped",
                              path1="/tmp/dropped", argv=("/tmp/dropped", "true"))))
    assert ev.get("proc.exepath") == "/tmp/dropped"


def test_exec_takes_the_container_from_the_cgroup_id_without_reading_proc(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record's cgroup id names the container: /proc/PID/cgroup is neither read nor
    parsed at exec (a third of the per-exec /proc cost), and the id's answer is the one
    the process keeps for its children."""
    import enforcer.state.process_table as pt  # noqa: PLC0415
    from enforcer.state.cgroup_ids import CgroupIds  # noqa: PLC0415

    root = _fake_proc(tmp_path)
    _proc(root, 300, "sh", 1, ["sh"], cgroup="0::/")
    mount = tmp_path / "cgroup2"
    scope = mount / "machine.slice" / f"libpod-{CID}.scope"
    scope.mkdir(parents=True)
    tr = _tracker(root)
    tr.ctx.cgroup_ids = CgroupIds(str(mount))
    parsed: list[str] = []
    monkeypatch.setattr(pt, "identify", lambda text: parsed.append(text) or pt.HOST_IDENTITY)
    ev = tr.apply(decode(pack(code=sc.CODES["execve"], tgid=300, comm="cat",
                              path1="/usr/bin/cat", argv=("cat",),
                              cgroup_id=scope.stat().st_ino)))
    assert parsed == []
    assert ev.get("container.id") == CID[:12]
    assert tr.table.get(300).cgroup.container_id == CID[:12]
    # an id nobody knows: back to /proc
    tr.apply(decode(pack(code=sc.CODES["execve"], tgid=300, comm="cat",
                         path1="/usr/bin/cat", argv=("cat",), cgroup_id=1)))
    assert parsed == ["0::/\n"]
