"""Exec-time facts: capability sets rendered as Falco does, and the executable's inode,
times and writability, read from a fake /proc and carried by the live event."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enforcer.sources import syscalls as sc
from enforcer.sources.decode import decode, pack
from enforcer.state.capabilities import CAP_NAMES, cap_names, has_cap
from enforcer.state.containers import ContainerRegistry
from enforcer.state.exe_image import Creds, ExeInspector, parse_status
from enforcer.state.live_event import StateContext
from enforcer.state.process_table import ProcessTable
from enforcer.state.tracker import Tracker

PODMAN_DEFAULT = 0x00000000800405FB  # CapEff of a root process in `podman run`
FULL = (1 << 41) - 1


@pytest.mark.parametrize(("mask", "text"), [
    (0, ""),
    (0b11, "CAP_CHOWN CAP_DAC_OVERRIDE"),
    (1 << 21, "CAP_SYS_ADMIN"),
    (1 << 16 | 1 << 40, "CAP_SYS_MODULE CAP_CHECKPOINT_RESTORE"),
    (PODMAN_DEFAULT, "CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER CAP_FSETID CAP_KILL CAP_SETGID "
                     "CAP_SETUID CAP_SETPCAP CAP_NET_BIND_SERVICE CAP_SYS_CHROOT CAP_SETFCAP"),
    (1 << 41 | 1, "CAP_CHOWN"),  # bits newer than Falco's table have no name
])
def test_capability_sets_render_as_falco_prints_them(mask: int, text: str) -> None:
    assert cap_names(mask) == text


def test_full_set_names_every_capability_in_kernel_order() -> None:
    names = cap_names(FULL).split(" ")
    assert names == list(CAP_NAMES) and len(names) == 41
    assert has_cap(FULL, "CAP_SYS_ADMIN") and not has_cap(PODMAN_DEFAULT, "CAP_SYS_ADMIN")


STATUS = ("Name:\tsh\nUid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\n"
          "Groups:\t4 24 27 \nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\n"
          "CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n")


def test_status_gives_fs_ids_groups_and_capability_sets() -> None:
    creds = parse_status(STATUS.encode())
    assert creds == Creds(fsuid=1003, fsgid=53, groups=frozenset({4, 24, 27}),
                          cap_inheritable=0, cap_permitted=0xA80425FB,
                          cap_effective=0xA80425FB)
    assert parse_status(b"Name:\tkthreadd\n") is None


# --- writability: Falco's test, against real files in a fake /proc ---------------------
def _fake(tmp_path: Path, mode: int, mountinfo: str = "") -> tuple[ExeInspector, os.stat_result]:
    exe = tmp_path / "bin" / "tool"
    exe.parent.mkdir()
    exe.write_bytes(b"\x7fELF")
    exe.chmod(mode)
    if os.geteuid() == 0:
        os.chown(exe, 1000, 2000)  # owned by someone other than the tests' user
    proc = tmp_path / "proc" / "42"
    proc.mkdir(parents=True)
    (proc / "exe").symlink_to(exe)
    (proc / "mountinfo").write_text(mountinfo)
    return ExeInspector(str(tmp_path / "proc")), exe.stat()


def _creds(uid: int, gid: int = 9999, caps: int = 0, groups: frozenset[int] = frozenset()
           ) -> Creds:
    return Creds(fsuid=uid, fsgid=gid, groups=groups, cap_effective=caps)


def test_image_has_inode_and_times_of_the_executable(tmp_path: Path) -> None:
    inspector, st = _fake(tmp_path, 0o755)
    image = inspector.capture(42, _creds(st.st_uid))
    assert image is not None
    assert (image.ino, image.ctime_ns, image.mtime_ns) == (st.st_ino, st.st_ctime_ns,
                                                           st.st_mtime_ns)
    assert image.writable is True  # the owner may write it
    assert inspector.capture(43, _creds(0)) is None  # no such process


@pytest.mark.parametrize(("mode", "who", "writable"), [
    (0o755, "owner", True),
    (0o555, "owner", True),  # Falco counts the owner as able to (chmod then write)
    (0o775, "group", True),
    (0o755, "group", False),
    (0o775, "supplementary", True),
    (0o757, "other", True),
    (0o775, "other", False),
    (0o755, "other+dac_override", True),
    (0o755, "other+fowner", True),
    (0o755, "other+net_admin", False),
])
def test_writable_follows_owner_group_other_and_capabilities(
        tmp_path: Path, mode: int, who: str, writable: bool) -> None:
    inspector, st = _fake(tmp_path, mode)
    caps = {"other+dac_override": 1 << 1, "other+fowner": 1 << 3,
            "other+net_admin": 1 << 12}.get(who, 0)
    creds = {"owner": _creds(st.st_uid),
             "group": _creds(st.st_uid + 1, gid=st.st_gid),
             "supplementary": _creds(st.st_uid + 1, groups=frozenset({st.st_gid}))
             }.get(who, _creds(st.st_uid + 1, caps=caps))
    image = inspector.capture(42, creds)
    assert image is not None and image.writable is writable


def test_read_only_superblock_makes_nothing_writable(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.write_text("")
    dev = probe.stat().st_dev
    line = (f"36 35 {os.major(dev)}:{os.minor(dev)} / / rw,relatime - ext4 /dev/sda1 "
            "ro,errors=remount-ro\n")
    inspector, st = _fake(tmp_path, 0o777, mountinfo=line)
    image = inspector.capture(42, _creds(st.st_uid))
    assert image is not None and image.writable is False
    # the mount is read-only but the superblock is not (a ro bind mount): Falco says yes
    rw_line = line.replace("ro,errors", "rw,errors").replace("/ rw,relatime", "/ ro,relatime")
    (tmp_path / "proc" / "42" / "mountinfo").write_text(rw_line)
    image = ExeInspector(str(tmp_path / "proc")).capture(42, _creds(st.st_uid))
    assert image is not None and image.writable is True


def test_no_credentials_means_not_writable(tmp_path: Path) -> None:
    inspector, _ = _fake(tmp_path, 0o777)
    image = inspector.capture(42, None)
    assert image is not None and image.writable is False


# --- the live event ------------------------------------------------------------------
def _proc(root: Path, pid: int, comm: str, exe: Path, status: str) -> None:
    d = root / str(pid)
    d.mkdir()
    (d / "stat").write_text(f"{pid} ({comm}) S 1 {pid} {pid} 0 -1 0 0 0 0 0 0 0 0 0 "
                            "20 0 1 0 100 0 0")
    (d / "cmdline").write_bytes(comm.encode() + b"\0")
    (d / "status").write_text(status)
    (d / "cgroup").write_text("0::/\n")
    (d / "cwd").symlink_to("/")
    (d / "exe").symlink_to(exe)
    (d / "mountinfo").write_text("")


def test_live_event_carries_capabilities_and_exe_inode_after_the_process_is_gone(
        tmp_path: Path) -> None:
    root = tmp_path / "proc"
    root.mkdir()
    (root / "stat").write_text("cpu 0\nbtime 1700000000\n")
    shell, dropped = tmp_path / "sh", tmp_path / "dropped"
    shell.write_bytes(b"sh")
    _proc(root, 100, "sh", shell, "Name:\tsh\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
                                  "CapEff:\t0000000000200003\nCapPrm:\t0000000000200003\n")
    table = ProcessTable(str(root))
    table.seed()
    tracker = Tracker(StateContext(table=table, containers=ContainerRegistry(None),
                                   proc_root=str(root), hostname="h"))
    tracker.apply(decode(pack(code=sc.EV_FORK, tgid=100, ints=(101, 100))))
    dropped.write_bytes(b"\x7fELF")
    dropped.chmod(0o755)
    _proc(root, 101, "dropped", dropped, "Name:\tdropped\nUid:\t0\t0\t0\t0\n"
                                         "Gid:\t0\t0\t0\t0\nCapEff:\t0000000000010000\n")
    ev = tracker.apply(decode(pack(code=sc.CODES["execve"], tgid=101, comm="dropped",
                                   path1=str(dropped), argv=("dropped",))))
    st = dropped.stat()
    for pid in (100, 101):  # both exit: what was read at exec stays
        for f in (root / str(pid)).iterdir():
            f.unlink()
        (root / str(pid)).rmdir()
    assert ev.get("thread.cap_effective") == "CAP_SYS_MODULE"
    assert ev.get("proc.exe_ino") == st.st_ino
    assert ev.get("proc.exe_ino.ctime") == st.st_ctime_ns
    assert ev.get("proc.exe_ino.mtime") == st.st_mtime_ns
    start = table.get(101).start_ns
    assert ev.get("proc.exe_ino.ctime_duration_proc_start") == (
        (start - st.st_ctime_ns) & 0xFFFFFFFFFFFFFFFF)
    assert ev.get("proc.is_exe_writable") is (st.st_uid == 0)
    # the parent's own exec-time facts (read when the table was seeded)
    parent = table.get(100)
    assert parent is not None and parent.exe_image is not None
    assert parent.exe_image.ino == shell.stat().st_ino
    assert cap_names(parent.creds.cap_effective) == "CAP_CHOWN CAP_DAC_OVERRIDE CAP_SYS_ADMIN"


def test_fields_are_absent_when_nothing_was_read(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    root.mkdir()
    (root / "stat").write_text("cpu 0\nbtime 1700000000\n")
    tracker = Tracker(StateContext(table=ProcessTable(str(root)),
                                   containers=ContainerRegistry(None), proc_root=str(root),
                                   hostname="h"))
    ev = tracker.apply(decode(pack(code=sc.CODES["execve"], tgid=300, comm="gone",
                                   path1="/bin/gone", argv=("gone",))))
    for field in ("thread.cap_effective", "proc.exe_ino", "proc.exe_ino.ctime",
                  "proc.exe_ino.mtime", "proc.exe_ino.ctime_duration_proc_start",
                  "proc.is_exe_writable"):
        assert ev.get(field) is None, field


CID = "127a8590207428f1c575b1d4646d8239c264dc1afc2272c463f3f5f5cf152076"


def test_process_gone_before_its_exec_was_seen_reads_the_container_upper_layer(
        tmp_path: Path) -> None:
    root = tmp_path / "proc"
    root.mkdir()
    (root / "stat").write_text("cpu 0\nbtime 1700000000\n")
    shell = tmp_path / "sh"
    shell.write_bytes(b"sh")
    _proc(root, 200, "sh", shell, "Name:\tsh\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
                                  "CapEff:\t00000000800405fb\n")
    (root / "200" / "cgroup").write_text(f"0::/libpod_parent/libpod-{CID}\n")
    upper = tmp_path / "upper"
    (upper / "tmp").mkdir(parents=True)
    dropped = upper / "tmp" / "dropped"
    dropped.write_bytes(b"\x7fELF")
    doc = {"Name": "/drop", "Config": {"Image": "busybox"},
           "GraphDriver": {"Data": {"UpperDir": str(upper)}}}
    table = ProcessTable(str(root))
    table.seed()
    registry = ContainerRegistry(lambda _: doc)
    registry.prefetch(CID)  # as on the runtime's create event
    tracker = Tracker(StateContext(table=table, containers=registry, proc_root=str(root),
                                   hostname="h"))
    tracker.apply(decode(pack(code=sc.EV_FORK, tgid=200, ints=(201, 200))))
    ev = tracker.apply(decode(pack(code=sc.CODES["execve"], tgid=201, comm="dropped",
                                   path1="/tmp/dropped", argv=("/tmp/dropped",))))
    assert ev.get("container.name") == "drop"
    st = dropped.stat()
    assert ev.get("proc.exe_ino") == st.st_ino
    assert ev.get("proc.exe_ino.ctime") == st.st_ctime_ns
    assert ev.get("proc.is_exe_writable") is True  # root with CAP_DAC_OVERRIDE
    assert ev.get("thread.cap_effective").startswith("CAP_CHOWN CAP_DAC_OVERRIDE")
    # a file from the image's lower layers is not in the upper one: unknown, not guessed
    ev = tracker.apply(decode(pack(code=sc.EV_FORK, tgid=200, ints=(202, 200))))
    ev = tracker.apply(decode(pack(code=sc.CODES["execve"], tgid=202, comm="ls",
                                   path1="/bin/ls", argv=("ls",))))
    assert ev.get("proc.exe_ino") is None and ev.get("proc.is_exe_writable") is None
