"""Upstream stable Falco rules fired by real behaviour on this host and in real podman
containers, each with a near-miss that must stay silent. One agent for the module.

The bundled rules are the upstream falco_rules.yaml, unchanged; every rule used here is
enabled there by default.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from enforcer.resources import default_rules_dir
from tests.system.agent_harness import LiveAgent, sh
from tests.system.conftest import podman_run

pytestmark = [pytest.mark.root, pytest.mark.ebpf]


@pytest.fixture(scope="module")
def agent(ebpf_ready: None) -> Iterator[LiveAgent]:
    live = LiveAgent([str(default_rules_dir())])
    yield live
    live.close()


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A directory of the test's own, named uniquely (its name is the test's marker)."""
    d = tmp_path / uuid.uuid4().hex[:10]
    d.mkdir()
    return d


def _cmd_has(marker: str):
    return lambda a: marker in (a.event.get("proc.cmdline") or "")


# --- Read sensitive file untrusted ---------------------------------------------------------
def test_read_sensitive_file_untrusted_on_host(agent: LiveAgent) -> None:
    res = sh("cat /etc/shadow")
    assert res.returncode == 0
    a = agent.wait("Read sensitive file untrusted",
                   lambda a: a.event.get("proc.cmdline") == "cat /etc/shadow"
                   and a.event.get("proc.pname") == "sh")
    ev = a.event
    assert ev.get("proc.name") == "cat" and ev.get("fd.name") == "/etc/shadow"
    assert ev.get("user.name") == "root" and ev.get("container.id") == "host"
    assert a.output_fields["fd.name"] == "/etc/shadow"
    assert a.output_fields["proc.pname"] == "sh"
    assert "file=/etc/shadow" in a.output and a.priority.display == "Warning"


def test_read_sensitive_file_near_miss_is_silent(agent: LiveAgent, scratch: Path) -> None:
    m = scratch.name
    sh(f"cat /etc/hostname >/dev/null; : {m}")  # the same program, a file that is not
    agent.barrier()
    assert not agent.find("Read sensitive file untrusted",
                          lambda a: a.event.get("fd.name") == "/etc/hostname")


def test_read_sensitive_file_in_a_pod_container(agent: LiveAgent, podman_ready: None,
                                                 tmp_path: Path) -> None:
    name = f"web-1-{uuid.uuid4().hex[:6]}"
    cidfile = tmp_path / "cid"  # podman writes the full id there before the container starts
    res = podman_run("sh", "-c", "cat /etc/shadow; sleep 1", name=name,
                     labels={"io.kubernetes.pod.name": "web-1",
                             "io.kubernetes.pod.namespace": "shop",
                             "io.kubernetes.container.name": "app"},
                     extra=("--cidfile", str(cidfile)))
    assert res.returncode == 0, res.stderr
    a = agent.wait("Read sensitive file untrusted",
                   lambda a: a.event.get("container.name") == name)
    ev = a.event
    full = cidfile.read_text().strip()
    assert len(full) == 64 and ev.get("container.id") == full[:12]
    assert ev.get("container.image.repository") == "localhost/enforcer-busybox"
    assert ev.get("k8s.pod.name") == "web-1" and ev.get("k8s.ns.name") == "shop"
    assert ev.get("proc.name") == "cat" and ev.get("fd.name") == "/etc/shadow"
    assert ev.get("user.name") == "root"


# --- links over sensitive files ------------------------------------------------------------
# Each link is removed by the command that made it: no run, however it ends, leaves a second
# name of /etc/shadow on the host.
def test_symlink_over_sensitive_file(agent: LiveAgent, scratch: Path) -> None:
    sh(f"ln -s /etc/shadow {scratch}/s1; rm -f {scratch}/s1; "
       f"ln -s /etc/hosts {scratch}/s2; rm -f {scratch}/s2")
    agent.wait("Create Symlink Over Sensitive Files",
               lambda a: a.event.get("evt.arg.linkpath") == f"{scratch}/s1")
    agent.barrier()
    assert not agent.find("Create Symlink Over Sensitive Files",
                          lambda a: a.event.get("evt.arg.linkpath") == f"{scratch}/s2")


def test_hardlink_over_sensitive_file(agent: LiveAgent, scratch: Path) -> None:
    # the test's temp dir is on /etc's filesystem (checked), as a hard link needs
    assert scratch.stat().st_dev == Path("/etc/shadow").stat().st_dev
    res = sh(f"ln /etc/shadow {scratch}/h1; rm -f {scratch}/h1; "
             f"ln /etc/hosts {scratch}/h2 && rm -f {scratch}/h2")
    assert res.returncode == 0, res.stderr
    a = agent.wait("Create Hardlink Over Sensitive Files",
                   lambda a: a.event.get("evt.arg.newpath") == f"{scratch}/h1")
    assert a.event.get("proc.name") == "ln"
    agent.barrier()
    assert not agent.find("Create Hardlink Over Sensitive Files",
                          lambda a: a.event.get("evt.arg.newpath") == f"{scratch}/h2")


# --- processes -----------------------------------------------------------------------------
def test_search_private_keys(agent: LiveAgent, scratch: Path) -> None:
    m = scratch.name
    sh(f"grep -r 'BEGIN RSA PRIVATE' {scratch}; grep -r 'BEGIN PUBLIC {m}' {scratch}")
    agent.wait("Search Private Keys or Passwords", _cmd_has(str(scratch)))
    agent.barrier()
    assert not agent.find("Search Private Keys or Passwords", _cmd_has(f"PUBLIC {m}"))


def test_find_aws_credentials(agent: LiveAgent, scratch: Path) -> None:
    sh(f"find {scratch} -path '*/.aws/credentials'; find {scratch} -path '*/.aws/config'")
    agent.wait("Find AWS Credentials", _cmd_has(".aws/credentials"))
    agent.barrier()
    assert not agent.find("Find AWS Credentials", _cmd_has(".aws/config"))


def test_remove_bulk_data(agent: LiveAgent, scratch: Path) -> None:
    (scratch / "a").write_text("x" * 4096)
    (scratch / "b").write_text("x" * 4096)
    sh(f"shred -u {scratch}/a; rm {scratch}/b")
    a = agent.wait("Remove Bulk Data from Disk", _cmd_has(f"{scratch}/a"))
    assert a.event.get("proc.name") == "shred"
    agent.barrier()
    assert not agent.find("Remove Bulk Data from Disk", _cmd_has(f"{scratch}/b"))


def test_execution_from_dev_shm(agent: LiveAgent, scratch: Path) -> None:
    m = scratch.name
    shm = Path(f"/dev/shm/enforcer-test-{m}")
    shutil.copy("/bin/true", shm)
    try:
        shutil.copy("/bin/true", scratch / "t")
        sh(f"{shm}; {scratch}/t")
        a = agent.wait("Execution from /dev/shm", lambda a: a.event.get("proc.exe") == str(shm))
        assert a.event.get("proc.pname") == "sh"
        agent.barrier()
        assert not agent.find("Execution from /dev/shm",
                              lambda a: a.event.get("proc.exe") == f"{scratch}/t")
    finally:
        shm.unlink()


MEMFD_EXEC = """
import os, sys
src = sys.argv[1]
fd = os.memfd_create("payload", 0)
os.write(fd, open(src, "rb").read())
os.execv(f"/proc/self/fd/{fd}", ["payload", "1"])
"""


def test_fileless_execution_via_memfd(agent: LiveAgent, scratch: Path) -> None:
    shutil.copy("/bin/sleep", scratch / "sleep-copy")
    subprocess.run([sys.executable, "-c", MEMFD_EXEC, "/bin/sleep"], check=True, timeout=30)
    a = agent.wait("Fileless execution via memfd_create",
                   lambda a: (a.event.get("proc.exepath") or "").startswith("/memfd:payload"))
    assert a.event.get("proc.is_exe_from_memfd") is True
    # near-miss: the same program from a regular file
    subprocess.run([str(scratch / "sleep-copy"), "0.2"], check=True)
    agent.barrier()
    assert not agent.find("Fileless execution via memfd_create",
                          lambda a: "sleep-copy" in (a.event.get("proc.exepath") or ""))


PTRACE = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
req = int(sys.argv[1])
if req == 0:
    libc.ptrace(0, 0, None, None)   # PTRACE_TRACEME
else:
    child = os.fork()
    if child == 0:
        time.sleep(2)
        os._exit(0)
    libc.ptrace(req, child, None, None)
    time.sleep(0.1)
    os.kill(child, 9)
    os.waitpid(child, 0)
"""


def test_ptrace_attach(agent: LiveAgent, scratch: Path) -> None:
    m = scratch.name
    subprocess.run([sys.executable, "-c", PTRACE, "16", m], check=True, timeout=30)
    a = agent.wait("PTRACE attached to process", _cmd_has(m))
    assert a.event.get("evt.arg.request") == "PTRACE_ATTACH"
    n = uuid.uuid4().hex[:8]
    subprocess.run([sys.executable, "-c", PTRACE, "2", n], check=True, timeout=30)  # PEEKDATA
    agent.barrier()
    assert not agent.find("PTRACE attached to process", _cmd_has(n))


def test_ptrace_anti_debug(agent: LiveAgent, scratch: Path) -> None:
    m = scratch.name
    subprocess.run([sys.executable, "-c", PTRACE, "0", m], check=True, timeout=30)
    agent.wait("PTRACE anti-debug attempt", _cmd_has(m))
    n = uuid.uuid4().hex[:8]
    subprocess.run([sys.executable, "-c", PTRACE, "2", n], check=True, timeout=30)
    agent.barrier()
    assert not agent.find("PTRACE anti-debug attempt", _cmd_has(n))


def test_clear_log_activities(agent: LiveAgent, scratch: Path) -> None:
    # a log by its name (the rule's log_files), in the test's own directory, not /var/log
    log, keep = scratch / "syslog", scratch / "auth.log"
    sh(f"echo x > {log}; echo y >> {keep}")
    a = agent.wait("Clear Log Activities", lambda a: a.event.get("fd.name") == str(log))
    assert "O_TRUNC" in a.event.get("evt.arg.flags")
    agent.barrier()
    assert not agent.find("Clear Log Activities", lambda a: a.event.get("fd.name") == str(keep))


def test_directory_traversal_read(agent: LiveAgent) -> None:
    m = uuid.uuid4().hex[:8]
    # not from a shell: the rule ignores shells; a python parent reads via `../`
    script = ("import subprocess, sys; "
              "subprocess.run(['cat', '/etc/../etc/../etc/hostname', sys.argv[1]], "
              "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)")
    subprocess.run([sys.executable, "-c", script, f"/nonexistent-{m}"], check=True)
    a = agent.wait("Directory traversal monitored file read", _cmd_has(m))
    assert a.event.get("fd.name") == "/etc/hostname"
    assert a.event.get("fd.nameraw") == "/etc/../etc/../etc/hostname"
    n = uuid.uuid4().hex[:8]
    script_near = script.replace("/etc/../etc/../etc/hostname", "/etc/hostname")
    subprocess.run([sys.executable, "-c", script_near, f"/nonexistent-{n}"], check=True)
    agent.barrier()
    assert not agent.find("Directory traversal monitored file read", _cmd_has(n))


# --- containers ----------------------------------------------------------------------------
def test_terminal_shell_in_container(agent: LiveAgent, podman_ready: None) -> None:
    name = f"tty-{uuid.uuid4().hex[:6]}"
    res = podman_run("/bin/sh", "-c", "sleep 1", name=name, extra=("-t",))
    assert res.returncode == 0, res.stderr
    a = agent.wait("Terminal shell in container", lambda a: a.event.get("container.name") == name)
    assert a.event.get("proc.tty") != 0
    near = f"notty-{uuid.uuid4().hex[:6]}"
    podman_run("/bin/sh", "-c", "sleep 1", name=near)
    agent.barrier()
    assert not agent.find("Terminal shell in container",
                          lambda a: a.event.get("container.name") == near)


def test_netcat_remote_code_execution_in_container(agent: LiveAgent,
                                                   podman_ready: None) -> None:
    name = f"nc-{uuid.uuid4().hex[:6]}"
    podman_run("/bin/nc", "-w", "1", "-e", "/bin/true", "127.0.0.1", "9", name=name)
    a = agent.wait("Netcat Remote Code Execution in Container",
                   lambda a: a.event.get("container.name") == name)
    assert a.event.get("proc.name") == "nc"
    near = f"nc-plain-{uuid.uuid4().hex[:6]}"
    podman_run("/bin/nc", "-w", "1", "127.0.0.1", "9", name=near)
    agent.barrier()
    assert not agent.find("Netcat Remote Code Execution in Container",
                          lambda a: a.event.get("container.name") == near)


def test_packet_socket_in_container(agent: LiveAgent, podman_ready: None) -> None:
    name = f"pkt-{uuid.uuid4().hex[:6]}"
    podman_run("/bin/arping", "-c", "1", "-w", "1", "-I", "eth0", "127.0.0.1", name=name)
    a = agent.wait("Packet socket created in container",
                   lambda a: a.event.get("container.name") == name)
    assert a.event.get("evt.arg.domain") == "AF_PACKET"
    # near-miss: the same packet socket on the host is not in a container
    m = uuid.uuid4().hex[:8]
    sh(f"busybox arping -c 1 -w 1 -I lo 127.0.0.1 >/dev/null 2>&1; : {m}")
    agent.barrier()
    assert not agent.find("Packet socket created in container",
                          lambda a: a.event.get("container.id") == "host")


def test_redirect_stdio_to_network_in_container(agent: LiveAgent, podman_ready: None) -> None:
    name = f"rev-{uuid.uuid4().hex[:6]}"
    # a listener, and a "reverse shell" whose stdio becomes the connection (then sleeps)
    script = ("/bin/nc -l -p 5555 -e /bin/cat & sleep 0.5; "
              "/bin/nc 127.0.0.1 5555 -e /bin/sleep 2; true")
    podman_run("/bin/sh", "-c", script, name=name)
    a = agent.wait("Redirect STDOUT/STDIN to Network Connection in Container",
                   lambda a: a.event.get("container.name") == name)
    assert a.event.get("fd.type") in ("ipv4", "ipv6") and a.event.get("evt.rawres") in (0, 1, 2)
    near = f"rev-file-{uuid.uuid4().hex[:6]}"
    podman_run("/bin/sh", "-c", "exec 0</etc/hostname; sleep 0.5", name=near)
    agent.barrier()
    assert not agent.find("Redirect STDOUT/STDIN to Network Connection in Container",
                          lambda a: a.event.get("container.name") == near)


def test_debugfs_in_privileged_container(agent: LiveAgent, podman_ready: None) -> None:
    name = f"priv-{uuid.uuid4().hex[:6]}"
    script = "cp /bin/busybox /tmp/debugfs; /tmp/debugfs true 2>/dev/null; true"
    podman_run("/bin/sh", "-c", script, name=name, extra=("--privileged",))
    a = agent.wait("Debugfs Launched in Privileged Container",
                   lambda a: a.event.get("container.name") == name)
    assert a.event.get("container.privileged") is True
    near = f"unpriv-{uuid.uuid4().hex[:6]}"
    podman_run("/bin/sh", "-c", script, name=near)
    agent.barrier()
    assert not agent.find("Debugfs Launched in Privileged Container",
                          lambda a: a.event.get("container.name") == near)


def test_drop_and_execute_new_binary_in_container(agent: LiveAgent, podman_ready: None) -> None:
    name = f"drop-{uuid.uuid4().hex[:6]}"
    podman_run("/bin/sh", "-c", "cp /bin/busybox /tmp/dropped; /tmp/dropped true", name=name)
    a = agent.wait("Drop and execute new binary in container",
                   lambda a: a.event.get("container.name") == name)
    assert a.event.get("proc.exepath") == "/tmp/dropped"
    assert a.event.get("proc.is_exe_upper_layer") is True
    # the executable's inode as the output shows it: numbers. busybox sh execs the last
    # command of `-c` in place, so the process started before cp wrote the file and the
    # unsigned difference wraps around, as it does in Falco.
    ino = a.event.get("proc.exe_ino")
    ctime, mtime = a.output_fields["proc.exe_ino.ctime"], a.output_fields["proc.exe_ino.mtime"]
    since = a.output_fields["proc.exe_ino.ctime_duration_proc_start"]
    for value in (ino, ctime, mtime, since):
        assert isinstance(value, int) and not isinstance(value, bool) and value > 0, value
    assert mtime <= ctime
    assert since == (a.event.get("proc.pid.ts") - ctime) % (1 << 64)
    assert f"proc_exe_ino_ctime={ctime} proc_exe_ino_mtime={mtime} " in a.output
    assert f"proc_exe_ino_ctime_duration_proc_start={since} " in a.output
    assert a.event.get("proc.is_exe_writable") is True  # root wrote it, root runs it
    near = f"nodrop-{uuid.uuid4().hex[:6]}"
    podman_run("/bin/sh", "-c", "/bin/busybox true", name=near)  # from the image's layer
    agent.barrier()
    assert not agent.find("Drop and execute new binary in container",
                          lambda a: a.event.get("container.name") == near)


def test_release_agent_write_in_container_with_cap_sys_admin(
        agent: LiveAgent, podman_ready: None) -> None:
    rule = "Detect release_agent File Container Escapes"
    # any writable file named release_agent will do: the rule looks at the name, the
    # write and the writer's effective capabilities
    script = "echo /tmp/payload > /tmp/release_agent; sleep 1"
    name = f"escape-{uuid.uuid4().hex[:6]}"
    res = podman_run("/bin/sh", "-c", script, name=name, extra=("--cap-add", "SYS_ADMIN"))
    assert res.returncode == 0, res.stderr
    a = agent.wait(rule, lambda a: a.event.get("container.name") == name)
    assert a.event.get("fd.name") == "/tmp/release_agent" and a.event.get("user.uid") == 0
    caps = a.output_fields["thread.cap_effective"]
    assert caps.startswith("CAP_CHOWN CAP_DAC_OVERRIDE ") and "CAP_SYS_ADMIN" in caps.split()
    assert "CAP_SYS_MODULE" not in caps.split()  # podman's default set plus SYS_ADMIN only
    assert f"file=/tmp/release_agent cap_effective={caps} evt_type=" in a.output
    assert a.priority.display == "Critical"
    near = f"noescape-{uuid.uuid4().hex[:6]}"
    res = podman_run("/bin/sh", "-c", script, name=near)  # podman's default caps
    assert res.returncode == 0, res.stderr
    agent.barrier()
    assert not agent.find(rule, lambda a: a.event.get("container.name") == near)


def test_agent_own_events_never_reach_userspace(agent: LiveAgent) -> None:
    with open("/etc/shadow") as fh:  # the agent's own process (this test runs in it)
        fh.read()
    agent.barrier()
    assert not agent.find("Read sensitive file untrusted",
                          lambda a: a.event.get("proc.pid") == os.getpid())
