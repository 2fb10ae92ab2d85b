"""Upstream incubating and sandbox Falco rules fired by real behaviour, on this host and in
real podman containers, each with a near miss that must stay silent (issue 14, point 4).

The three upstream files are loaded unchanged (the incubating and sandbox files build on
the stable file's macros, as in Falco). One agent serves the module, and every trigger runs
once, in a batch, before the first test: host triggers in the batch's own directory, own
processes and own network namespace; container triggers in a few containers with unique
names (one per kind of container a rule needs: plain, privileged, CAP_SYS_ADMIN, ...), so
that the batch costs a handful of `podman run`s. Each test then waits for its rule's alert
and, after a barrier, checks that the near miss made none. The batch is void when the
kernel dropped events meanwhile, or when a container's execs were not seen as its own: a
silent near miss must be silent for what it did.

Every enabled rule of the two files fires here, or is in CANNOT_FIRE with its reason, which
docs/falco-parity.md repeats (tests below keep the two in step).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from enforcer.alert import Alert
from tests.conftest import REPO
from tests.system.agent_harness import LiveAgent, sh
from tests.system.conftest import podman_run

pytestmark = [pytest.mark.root, pytest.mark.ebpf]

DATA = REPO / "tests" / "data" / "falco-rules"
STABLE, INCUBATING, SANDBOX = (DATA / f for f in (
    "falco_rules.yaml", "falco-incubating_rules.yaml", "falco-sandbox_rules.yaml"))
DOC = REPO / "docs" / "falco-parity.md"
PYTHON = os.path.realpath(sys.executable)  # the interpreter itself, not the venv's link
NOBODY = 65534

# Enabled by default, and still unable to fire with the files as shipped (the reason is
# repeated in docs/falco-parity.md).
CANNOT_FIRE = {
    "Launch Disallowed Container":
        "`allowed_containers` is `container.id exists`, true for every event: a template "
        "for the user's own list of allowed images",
    "Network Connection outside Local Subnet":
        "`namespace_scope_network_only_subnet` is an empty list: no namespace is watched "
        "until the user names one",
}

Pred = Callable[[Alert], bool]


@dataclass(frozen=True)
class Expect:
    """The alert a trigger must raise, and the near miss's that must not come; `seen`, an
    alert (rule, predicate) that shows the near miss happened as the rule would see it."""
    hit: Pred
    miss: Pred
    seen: tuple[str, Pred] | None = None


def _field(name: str, value: object) -> Pred:
    return lambda a: a.event.get(name) == value


def _has(name: str, text: str) -> Pred:
    return lambda a: text in str(a.event.get(name) or "")


def _both(p: Pred, q: Pred) -> Pred:
    return lambda a: p(a) and q(a)


def _enabled(path: Path) -> list[str]:
    return [item["rule"] for item in yaml.safe_load(path.read_text())
            if "rule" in item and item.get("enabled", True)]


# A control beside the upstream files: every container of the batch is seen as itself, so
# that a near miss in a container is silent because of what it did, not because its events
# were lost or taken for the host's.
CONTROL = "i14b container seen"
CONTROL_RULE = f"""
- rule: {CONTROL}
  desc: an exec in one of this module's containers
  condition: evt.type in (execve, execveat) and container.name startswith "i14b-"
  output: "%container.name"
  priority: DEBUG
"""


class LoginShell:
    """A shell of the test's whose audit login uid is not root's, started before the agent
    (which reads it from /proc when it starts, and passes it on to every child): the sudo
    and pkexec rules want a user who logged in (`user.loginuid != 0`), and a suite run
    from root's own login session (loginuid 0) would otherwise have none."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["sh"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd="/", preexec_fn=self._own_login)

    @staticmethod
    def _own_login() -> None:
        with open("/proc/self/loginuid") as fh:
            if fh.read().strip() == "0":
                with open("/proc/self/loginuid", "w") as out:
                    out.write("4242")

    def run(self, command: str) -> None:
        """Run `command` from this shell, to its end."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{command} >/dev/null 2>&1; echo i14b-done\n")
        self.proc.stdin.flush()
        while self.proc.stdout.readline().strip() != "i14b-done":
            pass

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def login_shell() -> Iterator[LoginShell]:
    shell = LoginShell()
    yield shell
    shell.close()


@pytest.fixture(scope="module")
def agent(ebpf_ready: None, login_shell: LoginShell,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAgent]:
    control = tmp_path_factory.mktemp("control") / "control.yaml"
    control.write_text(CONTROL_RULE)
    live = LiveAgent([str(STABLE), str(INCUBATING), str(SANDBOX), str(control)])
    yield live
    live.close()


# --- host triggers -------------------------------------------------------------------------
# Programs named as a rule expects are links to (or copies of) this machine's binaries in
# the batch's own directory: the kernel names a process after the file it executes.
NET = r"""
import socket, sys
kind = sys.argv[1]
if kind == "tcp":
    srv = socket.socket()
    srv.bind(("10.200.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname(), timeout=10)
    conn, _ = srv.accept()
    for s in (conn, cli, srv):
        s.close()
else:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect(("10.200.0.1", int(sys.argv[2])))
    udp.close()
"""
SYSCALL = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
what = sys.argv[1]
if what == "setns":
    libc.setns(os.open("/proc/self/ns/net", os.O_RDONLY), 0)
elif what == "bpf":
    attr = ctypes.create_string_buffer(128)
    libc.syscall(321, 5, attr, 128)  # BPF_PROG_LOAD of nothing: refused, still a bpf call
elif what == "userfaultfd":
    libc.syscall(323, 1)  # UFFD_USER_MODE_ONLY
elif what == "setuid":
    try:
        os.setuid(int(sys.argv[2]))
    except OSError:
        pass
"""


def _run(argv: list[str], **kw: object) -> int:
    """Run `argv` to its end; its pid (events carry it after the process is gone)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd="/", **kw)  # type: ignore[call-overload]
    proc.wait(60)
    return proc.pid


def _as_nobody(argv: list[str]) -> int:
    return _run(argv, user=NOBODY, group=NOBODY, extra_groups=[])


def _host(d: Path, m: str, login: LoginShell) -> dict[str, Expect]:
    """Run every host trigger and near miss; the expectations, by rule."""
    out: dict[str, Expect] = {}
    clean = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # no proxy setting of the machine's

    def named(name: str, target: str, copy: bool = False) -> str:
        sub = d / uuid.uuid4().hex[:6]
        sub.mkdir()
        (shutil.copy if copy else os.symlink)(target, sub / name)  # type: ignore[operator]
        return str(sub / name)

    # Modify Shell Configuration File: a program that is no shell writes a .bashrc
    sh(f"touch {d}/.bashrc {d}/bashrc")
    out["Modify Shell Configuration File"] = Expect(
        _field("fd.name", f"{d}/.bashrc"), _field("fd.name", f"{d}/bashrc"))

    # DB program spawned process: a child of a process named postgres
    for name, arg in (("postgres", f"hit-{m}"), ("postgresql", f"miss-{m}")):
        sh(f"{named(name, '/bin/sh', copy=True)} -c '/bin/true {arg}; true'")
    out["DB program spawned process"] = Expect(
        _has("proc.cmdline", f"hit-{m}"), _has("proc.cmdline", f"miss-{m}"))

    # Change thread namespace: setns by a program (into its own namespace: no change);
    # nsenter on the host is the rule's own exception
    setns = _run([named("i14setns", PYTHON), "-c", SYSCALL, "setns"])
    sh(f"nsenter --net=/proc/self/ns/net /bin/true miss-{m}")
    out["Change thread namespace"] = Expect(
        _field("proc.pid", setns), _has("proc.cmdline", f"miss-{m}"))

    # System procs network activity, Unexpected UDP Traffic: in a network namespace of the
    # batch's own (an address outside 127/8 on its loopback, gone with the namespace)
    ls, pyconn = named("ls", PYTHON), named("pyconn", PYTHON)
    udp_hit, udp_miss = named("i14udp", PYTHON), named("i14udp53", PYTHON)
    res = subprocess.run(
        ["unshare", "--net", "sh", "-c",
         f"ip link set lo up && ip addr add 10.200.0.1/8 dev lo && "
         f"{ls} -c \"$NET\" tcp && {pyconn} -c \"$NET\" tcp && "
         f"{udp_hit} -c \"$NET\" udp 5999 && {udp_miss} -c \"$NET\" udp 53"],
        env={**clean, "NET": NET}, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    out["System procs network activity"] = Expect(
        _both(_field("proc.name", "ls"), _has("fd.name", "10.200.0.1")),
        _both(_field("proc.name", "pyconn"), _has("fd.name", "10.200.0.1")))
    out["Unexpected UDP Traffic"] = Expect(
        _field("proc.name", "i14udp"), _field("proc.name", "i14udp53"))

    # Program run with disallowed http proxy env: curl with HTTP_PROXY set, asking a
    # local socket of the test's that never answers (curl lives a moment: proc.env is read
    # from /proc, see the doc)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        curls = [subprocess.Popen(["curl", "-s", "-m", "2", "--noproxy", "*", f"{url}/{arg}"],
                                  env={**clean, **extra}, stdout=subprocess.DEVNULL)
                 for arg, extra in ((f"hit-{m}", {"HTTP_PROXY": url}), (f"miss-{m}", {}))]
        for proc in curls:
            proc.wait(60)
    out["Program run with disallowed http proxy env"] = Expect(
        _has("proc.cmdline", f"hit-{m}"), _has("proc.cmdline", f"miss-{m}"))

    # Non sudo setuid: nobody asks for root (refused, still a setuid call); nobody
    # becoming nobody is the rule's exception
    su_hit = _as_nobody([PYTHON, "-c", SYSCALL, "setuid", "0"])
    su_miss = _as_nobody([PYTHON, "-c", SYSCALL, "setuid", str(NOBODY)])
    out["Non sudo setuid"] = Expect(_field("proc.pid", su_hit), _field("proc.pid", su_miss))

    # User mgmt binaries: chage on the host (its help); `chage -l` (a listing) is excepted
    sh(f"chage -h hit{m}; chage -l miss{m}")
    out["User mgmt binaries"] = Expect(
        _has("proc.cmdline", f"hit{m}"), _has("proc.cmdline", f"miss{m}"))

    # Delete or rename shell history
    sh(f"touch {d}/.bash_history {d}/notes && mv {d}/.bash_history {d}/h1 && "
       f"mv {d}/notes {d}/h2")
    out["Delete or rename shell history"] = Expect(
        _has("proc.cmdline", f"{d}/.bash_history"), _has("proc.cmdline", f"{d}/notes"))

    # Set Setuid or Setgid bit
    sh(f"touch {d}/suid {d}/plain && chmod u+s {d}/suid && chmod 0755 {d}/plain")
    out["Set Setuid or Setgid bit"] = Expect(
        _has("proc.cmdline", f"{d}/suid"), _has("proc.cmdline", f"{d}/plain"))

    # Potential Local Privilege Escalation via Environment Variables Misuse
    # (processes that live a moment: the agent reads proc.env from /proc, see the doc)
    live = [subprocess.Popen(["env", f"{var}=glibc.malloc.check=0", PYTHON, "-c",
                              "import time; time.sleep(3)", arg], env=clean)
            for var, arg in (("GLIBC_TUNABLES", f"hit-{m}"), ("GLIBC_TUNABLEZ", f"miss-{m}"))]
    out["Potential Local Privilege Escalation via Environment Variables Misuse"] = Expect(
        _has("proc.cmdline", f"hit-{m}"), _has("proc.cmdline", f"miss-{m}"))

    # Backdoored library loaded into SSHD: a program named sshd reads such a file
    sshd = named("sshd", "/bin/cat", copy=True)
    sh(f"touch {d}/liblzma.so.5.6.1 {d}/liblzma.so.5.4.5 && "
       f"{sshd} {d}/liblzma.so.5.6.1 {d}/liblzma.so.5.4.5 >/dev/null")
    out["Backdoored library loaded into SSHD (CVE-2024-3094)"] = Expect(
        _field("fd.name", f"{d}/liblzma.so.5.6.1"), _field("fd.name", f"{d}/liblzma.so.5.4.5"))

    # BPF Program Not Profiled: a program load (refused: no program); bpftool is excepted
    bpf_hit = _run([named("i14bpf", PYTHON), "-c", SYSCALL, "bpf"])
    bpf_miss = _run([named("bpftool", PYTHON), "-c", SYSCALL, "bpf"])
    out["BPF Program Not Profiled"] = Expect(
        _field("proc.pid", bpf_hit), _field("proc.pid", bpf_miss))

    # Detect crypto miners using the Stratum protocol
    sh(f"/bin/true stratum+tcp://hit-{m}")
    sh(f"/bin/true tcp://miss-{m}")
    out["Detect crypto miners using the Stratum protocol"] = Expect(
        _has("proc.cmdline", f"hit-{m}"), _has("proc.cmdline", f"miss-{m}"))

    # Sudo Potential Privilege Escalation (CVE-2021-3156's shape: -s and a trailing `\`)
    sudo = named("sudo", "/bin/true", copy=True)
    login.run(f"{sudo} -s 'hit{m}\\'")
    login.run(f"{sudo} -s miss{m}")
    out["Sudo Potential Privilege Escalation"] = Expect(
        _has("proc.cmdline", f"hit{m}"), _has("proc.cmdline", f"miss{m}"))

    # Unprivileged Delegation of Page Faults Handling to a Userspace Process
    uffd_hit = _as_nobody([PYTHON, "-c", SYSCALL, "userfaultfd"])
    uffd_miss = _run([PYTHON, "-c", SYSCALL, "userfaultfd"])  # root's
    out["Unprivileged Delegation of Page Faults Handling to a Userspace Process"] = Expect(
        _field("proc.pid", uffd_hit), _field("proc.pid", uffd_miss))

    # Polkit (CVE-2021-4034): pkexec with no argument at all
    pk_hit, pk_miss = named("pkexec", "/bin/true", copy=True), named("pkexec", "/bin/true",
                                                                     copy=True)
    login.run(pk_hit)
    login.run(f"{pk_miss} --version")
    out["Polkit Local Privilege Escalation Vulnerability (CVE-2021-4034)"] = Expect(
        _field("proc.exepath", pk_hit), _field("proc.exepath", pk_miss))

    # Netcat/Socat Remote Code Execution on Host, Launch Suspicious Network Tool on Host:
    # busybox's nc, by the name nc, to a closed local port (refused: nothing runs)
    nc_dir = Path(named("nc", shutil.which("busybox") or "/bin/busybox")).parent
    env = {**clean, "PATH": f"{nc_dir}:{clean['PATH']}"}
    subprocess.run(["sh", "-c", f"nc -w 1 -e /bin/true-{m} 127.0.0.1 9; "
                    f"nc -w 1 127.0.0.1 9 </dev/null; true"], env=env, check=False,
                   capture_output=True, timeout=60)
    out["Netcat/Socat Remote Code Execution on Host"] = Expect(
        _has("proc.cmdline", f"/bin/true-{m}"),
        lambda a: a.event.get("proc.cmdline") == "nc -w 1 127.0.0.1 9")
    out["Launch Suspicious Network Tool on Host"] = Expect(
        _has("proc.cmdline", f"/bin/true-{m}"), _field("container.name", f"i14b-plain-{m}"))

    # Known Cryptominer Process Executed
    miner, not_miner = named("xmrig", "/bin/true", copy=True), named("xmrig-test", "/bin/true",
                                                                     copy=True)
    sh(f"{miner}; {not_miner}")
    out["Known Cryptominer Process Executed"] = Expect(
        _field("proc.exepath", miner), _field("proc.exepath", not_miner))

    # the web server rules: a shell named nginx runs a shell, a reverse shell's command
    # line and a suspicious child; the near misses are the rules' own exceptions
    nginx = named("nginx", "/bin/sh", copy=True)
    sh(f"{nginx} -c '/bin/sh -c \": shell-{m}\"; /bin/sh -c \": healthcheck-{m}\"; "
       f"/bin/sh -c \": /dev/tcp/rev-{m}\"; id idhit{m}; id status{m}; true'")
    out["Web Server Spawned Shell"] = Expect(
        _has("proc.cmdline", f"shell-{m}"), _has("proc.cmdline", f"healthcheck-{m}"))
    out["Reverse Shell from Web Server"] = Expect(
        _has("proc.cmdline", f"rev-{m}"), _has("proc.cmdline", f"shell-{m}"))
    out["Web Server Spawned Suspicious Child Process"] = Expect(
        _has("proc.cmdline", f"idhit{m}"), _has("proc.cmdline", f"status{m}"))
    for proc in live:
        proc.wait(60)
    return out


# --- container triggers --------------------------------------------------------------------
# Commands run by their path (/bin/touch, not touch): busybox's shell runs its applets
# in-process or through /proc/self/exe, and a rule on a program's name needs a real exec
# of a file of that name. Each write is to the container's own file system.
PLAIN = """
mkdir -p /root/.ssh /root/.npm /usr/local/bin /usr/local/share /var/lib/rpm /etc/apt \
  /host /hostx
/bin/touch /etc/cron-i14 /etc/xcron-i14
echo k > /root/.ssh/known_hosts; echo k > /root/ssh-notes
/bin/cat /root/.ssh/known_hosts /root/ssh-notes >/dev/null
/bin/touch /root/.ssh/authorized_keys /root/.ssh/authorized_keys.old
/bin/touch /dev/i14-created /dev/tty-i14
/bin/rpm -q i14-pkg; /bin/rpm2cpio /i14-absent
/bin/nc -w 1 127.0.0.1 9 </dev/null
cp /bin/busybox /tmp/scp; cp /bin/busybox /tmp/scpx; /tmp/scp; /tmp/scpx
/bin/wget -q -T 1 -O /dev/null http://127.0.0.1:9/i14-get
/bin/cat /proc/1/environ /proc/1/cmdline >/dev/null
cp /bin/busybox /tmp/kubectl; cp /bin/busybox /tmp/kubectx; /tmp/kubectl; /tmp/kubectx
echo aTE0Cg== > /tmp/b64; /bin/base64 -d /tmp/b64; /bin/base64 /tmp/b64
printf '#!/bin/sh\\n/bin/nc -w 1 127.0.0.1 9 </dev/null\\ntrue\\n' > /tmp/npm
cp /tmp/npm /tmp/npx; chmod +x /tmp/npm /tmp/npx; /tmp/npm; /tmp/npx
/bin/touch /etc/i14-etc /tmp/i14-etc
/bin/touch /root/i14-root /root/.npm/i14-root
/bin/touch /var/lib/rpm/i14-rpm /var/lib/i14-rpm
/bin/touch /bin/i14-bin /tmp/i14-bin
/bin/touch /usr/local/bin/i14-mon /usr/local/share/i14-mon
/bin/rm /bin/i14-bin; /bin/rm /tmp/i14-bin
/bin/mkdir /bin/i14-dir /tmp/i14-dir
/bin/touch /etc/apt/sources.list /tmp/sources.list
/bin/touch /dev/sd-i14 /dev/xd-i14
/bin/touch /host/i14 /hostx/i14
/bin/unshare -m /bin/true
/bin/mount -t tmpfs i14 /tmp
/bin/whoami
true
"""
META = """
ip link set lo up; ip addr add 169.254.169.254/32 dev lo; ip addr add 169.254.169.253/32 dev lo
/bin/nc -l -p 80 >/dev/null & /bin/nc -l -p 81 >/dev/null & sleep 0.5
echo x | /bin/nc -w 1 169.254.169.254 80; echo x | /bin/nc -w 1 169.254.169.253 81
wait
sleep 3
"""


def _containers(m: str) -> tuple[dict[str, Expect], list[str]]:
    """Run the batch's containers; the expectations, by rule, and the containers' names."""
    name = {role: f"i14b-{role}-{m}" for role in (
        "plain", "priv", "cap", "meta", "meta-ks", "tar", "tar-etc", "tty", "notty", "sens")}
    # A container's first process lives a moment, as any service's would: the agent
    # reads its pid in the container, terminal and process group from /proc (see the doc).
    linger = "\nsleep 3"
    whoami = ("printf '#!/bin/sh\\nsleep 3\\n' > /tmp/whoami; chmod +x /tmp/whoami; "
              "exec /tmp/whoami")
    kube_system = {"io.kubernetes.pod.name": "i14b", "io.kubernetes.pod.namespace": "kube-system"}
    runs: list[tuple[str, tuple[str, ...], tuple[str, ...], dict[str, str] | None]] = [
        ("plain", ("sh", "-c", PLAIN + linger), (), None),
        ("priv", ("sh", "-c", "/bin/mount -t tmpfs i14 /tmp" + linger), ("--privileged",),
         None),
        ("cap", ("sh", "-c", "/bin/unshare -m /bin/true" + linger),
         ("--cap-add", "SYS_ADMIN"), None),
        ("meta", ("sh", "-c", META), ("--network", "none", "--cap-add", "NET_ADMIN"), None),
        ("meta-ks", ("sh", "-c", META), ("--network", "none", "--cap-add", "NET_ADMIN"),
         kube_system),
        # tar as the entrypoint (a CPU share of 1% makes it last a moment)
        ("tar", ("/bin/tar", "-cf", "/dev/null", "/bin/busybox"), ("--cpus", "0.01"), None),
        ("tar-etc", ("/bin/tar", "-cf", "/dev/null", "/etc/passwd"), ("--cpus", "0.01"),
         None),
        # whoami on a terminal, leading its process group (a script of that name that
        # lives a moment); the same without a terminal
        ("tty", ("sh", "-c", whoami), ("-t",), None),
        ("notty", ("sh", "-c", whoami), (), None),
        # a read-only mount of the host's /proc: a sensitive mount (the container only
        # sleeps, in a child of its first process)
        ("sens", ("sh", "-c", "/bin/sleep 3; true"), ("-v", "/proc:/mnt/i14-proc:ro"), None),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:  # each mostly waits: a few at a time
        done = list(pool.map(lambda r: podman_run(*r[1], name=name[r[0]], extra=r[2],
                                                  labels=r[3]), runs))
    for (role, *_), res in zip(runs, done, strict=True):
        assert res.returncode != 125, (role, res.stderr)

    def inside(role: str, pred: Pred | None = None) -> Pred:
        where = _field("container.name", name[role])
        return where if pred is None else _both(where, pred)

    started = ("Launch Sensitive Mount Container", inside("plain", _field("proc.vpid", 1)))

    def plain(field: str, hit: object, miss: object) -> Expect:
        return Expect(inside("plain", _field(field, hit)), inside("plain", _field(field, miss)))

    return {
        "Schedule Cron Jobs": plain("fd.name", "/etc/cron-i14", "/etc/xcron-i14"),
        "Read ssh information": plain("fd.name", "/root/.ssh/known_hosts", "/root/ssh-notes"),
        "Adding ssh keys to authorized_keys": plain(
            "fd.name", "/root/.ssh/authorized_keys", "/root/.ssh/authorized_keys.old"),
        "Create files below dev": plain("fd.name", "/dev/i14-created", "/dev/tty-i14"),
        "Launch Package Management Process in Container": plain(
            "proc.name", "rpm", "rpm2cpio"),
        # each other's near miss: nc in a container, and nc on the host
        "Launch Suspicious Network Tool in Container": Expect(
            inside("plain", _field("proc.name", "nc")),
            _both(_field("proc.name", "nc"), _field("container.id", "host"))),
        "Launch Remote File Copy Tools in Container": plain("proc.name", "scp", "scpx"),
        "Launch Ingress Remote File Copy Tools in Container": Expect(
            inside("plain", _field("proc.name", "wget")),
            _both(_field("proc.name", "wget"), _field("container.id", "host"))),
        "Read environment variable from /proc files": plain(
            "fd.name", "/proc/1/environ", "/proc/1/cmdline"),
        "Kubernetes Client Tool Launched in Container": plain("proc.name", "kubectl", "kubectx"),
        "Decoding Payload in Container": plain(
            "proc.cmdline", "base64 -d /tmp/b64", "base64 /tmp/b64"),
        "Network Tool Executed During NPM Package Install": plain("proc.pname", "npm", "npx"),
        "Write below etc": plain("fd.name", "/etc/i14-etc", "/tmp/i14-etc"),
        "Write below root": plain("fd.name", "/root/i14-root", "/root/.npm/i14-root"),
        "Write below rpm database": plain(
            "fd.name", "/var/lib/rpm/i14-rpm", "/var/lib/i14-rpm"),
        "Write below binary dir": plain("fd.name", "/bin/i14-bin", "/tmp/i14-bin"),
        "Write below monitored dir": plain(
            "fd.name", "/usr/local/bin/i14-mon", "/usr/local/share/i14-mon"),
        "Modify binary dirs": plain("proc.cmdline", "rm /bin/i14-bin", "rm /tmp/i14-bin"),
        "Mkdir binary dirs": plain("evt.arg.path", "/bin/i14-dir", "/tmp/i14-dir"),
        "Update Package Repository": plain(
            "fd.name", "/etc/apt/sources.list", "/tmp/sources.list"),
        "Privileged Container Device Access": plain("fd.name", "/dev/sd-i14", "/dev/xd-i14"),
        "Container Access to Host Sensitive Paths": plain("fd.name", "/host/i14", "/hostx/i14"),
        # the same unshare: refused without CAP_SYS_ADMIN, allowed with it
        "Change namespace privileges via unshare": Expect(inside("plain"), inside("cap")),
        # the same mount: in a privileged container, and in a plain one (refused there)
        "Mount Launched in Privileged Container": Expect(inside("priv"), inside("plain")),
        # the plain container's start was seen as one (`container_started`: the sensitive
        # mount rule fires at every start, see below), so it is silent for its privileges
        "Launch Privileged Container": Expect(inside("priv"), inside("plain"), started),
        "Launch Excessively Capable Container": Expect(inside("cap"), inside("plain"), started),
        "Contact EC2 Instance Metadata Service From Container": Expect(
            inside("meta", _field("fd.sip", "169.254.169.254")),
            inside("meta", _field("fd.sip", "169.254.169.253"))),
        # kube-system's access to the metadata service is the rule's own exception
        "Contact cloud metadata service from container": Expect(
            inside("meta", _field("fd.sip", "169.254.169.254")), inside("meta-ks")),
        # tar as a container's entrypoint reads what `kubectl cp` would copy; reading
        # system files is excepted
        "Exfiltrating Artifacts via Kubernetes Control Plane": Expect(
            inside("tar"), inside("tar-etc")),
        "Basic Interactive Reconnaissance": Expect(
            inside("tty", _field("proc.name", "whoami")),
            inside("notty", _field("proc.name", "whoami"))),
        # `not container.mount.dest[/proc*] in ("<NA>","N/A")` is also true for a container
        # without such a mount (a field with no value fails every comparison, as in Falco's
        # engine): the rule fires at every container's start, and the near miss is a later
        # process of the container with the mount (see the doc)
        "Launch Sensitive Mount Container": Expect(
            inside("sens", _field("container.mount.dest[/proc*]", "/mnt/i14-proc")),
            inside("sens", _field("proc.name", "sleep"))),
    }, list(name.values())


@pytest.fixture(scope="module")
def batch(agent: LiveAgent, login_shell: LoginShell, podman_ready: None,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, Expect]:
    """Every trigger and near miss, run once; then every event they made is evaluated."""
    m = uuid.uuid4().hex[:8]
    d = tmp_path_factory.mktemp("upstream-more")
    drops = agent.agent.drops.total
    host = _host(d, m, login_shell)
    in_containers, names = _containers(m)
    expect = {**host, **in_containers}
    assert sorted(expect) == FIRES
    agent.barrier()
    # a lost event proves nothing either way: neither an alert that never came nor a near
    # miss that stayed silent (another test's flood on a shared machine fills the ring)
    lost = agent.agent.drops.total - drops
    assert lost == 0, f"the kernel dropped {lost} events during the batch: run again"
    unseen = [n for n in names if not agent.find(CONTROL, _field("container.name", n))]
    assert not unseen, f"no exec seen in these containers, as themselves: {unseen}"
    return expect


SHOWN = ("proc.name", "proc.pid", "proc.cmdline", "proc.pname", "container.name", "fd.name",
         "evt.type", "proc.vpid", "container.mounts")
FIRES = sorted(set(_enabled(INCUBATING) + _enabled(SANDBOX)) - set(CANNOT_FIRE))


@pytest.mark.parametrize("rule", FIRES)
def test_rule_fires_and_its_near_miss_is_silent(agent: LiveAgent, batch: dict[str, Expect],
                                                rule: str) -> None:
    expect = batch[rule]
    try:
        agent.wait(rule, expect.hit, timeout=60)
    except AssertionError as exc:  # what the rule did match, to tell a miss from a mismatch
        seen = [{f: a.event.get(f) for f in SHOWN} for a in agent.find(rule)]
        raise AssertionError(f"{exc}\n{rule!r} matched only: {seen[:10]}") from None
    wrong = [{f: a.event.get(f) for f in SHOWN} for a in agent.find(rule, expect.miss)]
    assert not wrong  # the batch's events are all evaluated
    if expect.seen is not None:
        assert agent.find(*expect.seen), f"the near miss of {rule!r} was not seen as such"


def test_every_enabled_rule_is_fired_or_documented() -> None:
    """The test's two lists and the doc cover the enabled rules of both files, no more."""
    enabled = set(_enabled(INCUBATING) + _enabled(SANDBOX))
    assert set(CANNOT_FIRE) <= enabled
    doc = DOC.read_text()
    for rule in CANNOT_FIRE:
        assert f"| {rule} |" in doc, f"{rule} is not in {DOC.name}'s list"
