"""`enforcer doctor`: check and explain every prerequisite of the live agent."""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


@dataclass(frozen=True)
class Check:
    """One prerequisite: its verdict and what to do about it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    def line(self) -> str:
        verdict = "ok  " if self.ok else ("FAIL" if self.required else "warn")
        text = f"{verdict} {self.name}: {self.detail}"
        if not self.ok and self.fix:
            text += f"\n       fix: {self.fix}"
        return text


def _cap_eff(status_path: str = "/proc/self/status") -> int:
    try:
        for line in Path(status_path).read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def check_privileges() -> Check:
    caps = _cap_eff()
    has = {n: bool(caps >> bit & 1) for n, bit in
           (("CAP_BPF", CAP_BPF), ("CAP_PERFMON", CAP_PERFMON), ("CAP_SYS_ADMIN", CAP_SYS_ADMIN))}
    if os.geteuid() == 0 and has["CAP_SYS_ADMIN"]:
        return Check("privileges", True, "running as root")
    if all(has.values()):
        return Check("privileges", True, "CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN")
    missing = ", ".join(n for n, v in has.items() if not v)
    return Check("privileges", False, f"not root; missing {missing}",
                 "run as root (sudo), or grant CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN")


def check_tracefs() -> Check:
    base = Path("/sys/kernel/tracing/events")
    if not base.is_dir():
        return Check("tracefs", False, "not mounted at /sys/kernel/tracing",
                     "mount -t tracefs nodev /sys/kernel/tracing (scripts/setup.sh does)")
    if not (base / "syscalls" / "sys_enter_openat").is_dir():
        return Check("tracefs", False, "no syscall tracepoints (kernel built without "
                     "CONFIG_FTRACE_SYSCALLS?)", "use a kernel with syscall tracepoints")
    sched = all((base / "sched" / t).is_dir() for t in ("sched_process_fork",
                                                         "sched_process_exit"))
    if not sched:
        return Check("tracefs", False, "no sched_process_fork/exit tracepoints",
                     "use a kernel with sched tracepoints")
    return Check("tracefs", True, "syscall and sched tracepoints at /sys/kernel/tracing")


def check_headers() -> Check:
    build = Path(f"/lib/modules/{os.uname().release}/build")
    if (build / "include").exists():
        return Check("kernel headers", True, f"{build} -> {os.path.realpath(build)}")
    return Check("kernel headers", False, f"{build} missing (bcc compiles against it)",
                 "apt-get install linux-headers-amd64 and link /lib/modules/$(uname -r)/"
                 "build to /usr/src/linux-headers-*-amd64 (scripts/setup.sh does)")


def check_btf() -> Check:
    from enforcer.sources.ebpf import registers_at_exit_supported  # noqa: PLC0415

    if registers_at_exit_supported():
        return Check("BTF", True, "/sys/kernel/btf/vmlinux present: syscalls (but exec) are "
                     "watched at exit only (one tracepoint hit each)", required=False)
    return Check("BTF", False, "no /sys/kernel/btf/vmlinux, or Linux older than 5.15: "
                 "syscalls are watched at enter and exit (two tracepoint hits each, about "
                 "50 ns more per syscall)", "a kernel >= 5.15 with CONFIG_DEBUG_INFO_BTF",
                 required=False)


def check_bcc() -> Check:
    if importlib.util.find_spec("bcc") is not None:
        return Check("bcc", True, "Python module importable")
    return Check("bcc", False, "the bcc Python module is not importable",
                 "apt-get install python3-bpfcc libbpfcc, and run enforcer with Debian's "
                 "python3 or a venv made with --system-site-packages (scripts/setup.sh)")


def check_memlock() -> Check:
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY or soft >= 64 << 20:
        return Check("RLIMIT_MEMLOCK", True, "unlimited or large", required=False)
    return Check("RLIMIT_MEMLOCK", True, f"{soft} bytes; fine on kernels >= 5.11, which "
                 "charge BPF memory to the cgroup instead", required=False)


def check_cgroup2() -> Check:
    from enforcer.state.cgroup_ids import cgroup2_mount  # noqa: PLC0415

    mount = cgroup2_mount()
    if mount:
        return Check("cgroup v2", True, f"mounted at {mount} (container identity per event)",
                     required=False)
    return Check("cgroup v2", False, "not mounted: container identity falls back to "
                 "/proc/PID/cgroup, which misses very short-lived processes",
                 "mount the unified hierarchy (cgroup2)", required=False)


def check_runtime(socket_path: str | None) -> Check:
    from enforcer.adapters.docker_api import find_socket, ping  # noqa: PLC0415

    sock = find_socket(socket_path)
    if sock is None:
        return Check("container runtime API", False, "no Docker-compatible socket found",
                     "start `podman system service --time=0 unix:///run/podman/podman.sock` "
                     "or docker, or pass --container-socket; without it container.name, "
                     "image and k8s.* fields stay empty", required=False)
    if not ping(sock):
        return Check("container runtime API", False, f"{sock} does not answer /_ping",
                     "restart the runtime's API service", required=False)
    return Check("container runtime API", True, f"{sock} answers", required=False)


def check_cri(socket_path: str | None) -> Check:
    from enforcer.adapters.cri_sockets import find_socket  # noqa: PLC0415

    sock = find_socket(socket_path)
    if sock is None:
        return Check("CRI runtime API", False, "no containerd or cri-o CRI socket found",
                     "on a Kubernetes node, mount the runtime's socket (e.g. "
                     "/run/containerd/containerd.sock) or pass --cri-socket; without it the "
                     "names, images and pods of CRI containers stay empty", required=False)
    from enforcer.adapters.cri import CriClient  # noqa: PLC0415

    client = CriClient(sock, timeout=2.0)
    try:
        version = client.version()
    except OSError as exc:
        return Check("CRI runtime API", False, f"{sock} does not answer: {exc}",
                     "check that the runtime is running and serves the CRI (its cri plugin "
                     "enabled)", required=False)
    finally:
        client.close()
    return Check("CRI runtime API", True, f"{sock} answers: {version.get('runtime_name')} "
                 f"{version.get('runtime_version')}", required=False)


def check_store_spool(path: str) -> Check:
    """Records an agent spooled while its PostgreSQL store was unreachable, not yet sent."""
    import sqlite3  # noqa: PLC0415

    if not Path(path).exists():
        return Check("store spool", True, f"{path}: none (nothing waits for the database)",
                     required=False)
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            waiting = conn.execute("SELECT count(*) FROM spool").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return Check("store spool", False, f"{path}: unreadable ({exc})",
                     "stop the agent, move the file away; `enforcer audit import` of the "
                     "JSONL audit log fills the gap", required=False)
    if waiting:
        return Check("store spool", False, f"{path}: {waiting} records wait for the "
                     "PostgreSQL store (the agent replays them in order when it is back)",
                     "check that the database is reachable from this node (enforcer_store_up "
                     "and enforcer_store_backlog_records on /metrics)", required=False)
    return Check("store spool", True, f"{path}: empty", required=False)


def check_store(store: str, password_file: str | None) -> Check:
    """The PostgreSQL store answers and holds this enforcer's schema."""
    from enforcer.store.postgres.dsn import DsnError, redacted, with_password  # noqa: PLC0415

    try:
        dsn = with_password(store, password_file)
        import psycopg  # noqa: PLC0415

        from enforcer.store.postgres import migrations  # noqa: PLC0415

        with psycopg.connect(dsn, connect_timeout=5) as conn:
            migrations.check(conn)
    except (DsnError, ImportError) as exc:
        return Check("PostgreSQL store", False, str(exc), "fix --store-password-file or "
                     "install enforcer[postgresql]", required=False)
    except Exception as exc:  # noqa: BLE001 - psycopg's or the schema's: say which
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return Check("PostgreSQL store", False, f"{redacted(store)}: {first}",
                     "check the DSN and that `enforcer store migrate` was run",
                     required=False)
    return Check("PostgreSQL store", True, f"{redacted(store)}: reachable, schema current",
                 required=False)


CHECKS: list[Callable[[], Check]] = [check_privileges, check_tracefs, check_headers, check_bcc,
                                     check_btf, check_memlock, check_cgroup2]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the live agent's prerequisites")
    p.add_argument("--container-socket", metavar="PATH", default=None)
    p.add_argument("--cri-socket", metavar="PATH", default=None)
    p.add_argument("--store", default=os.environ.get("ENFORCER_STORE"),
                   help="the agent's store; a postgresql:// one is checked (env ENFORCER_STORE)")
    p.add_argument("--store-password-file", metavar="FILE",
                   default=os.environ.get("ENFORCER_STORE_PASSWORD_FILE"))
    p.add_argument("--store-spool", metavar="PATH",
                   default=os.environ.get("ENFORCER_STORE_SPOOL",
                                          "/var/lib/enforcer/store-spool.db"),
                   help="the agent's spool, whose backlog is shown (env ENFORCER_STORE_SPOOL)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    checks = [c() for c in CHECKS] + [check_runtime(args.container_socket),
                                      check_cri(args.cri_socket)]
    from enforcer.store.postgres.dsn import is_postgres  # noqa: PLC0415

    if is_postgres(getattr(args, "store", None)):
        checks.append(check_store(args.store, args.store_password_file))
        checks.append(check_store_spool(args.store_spool))
    for c in checks:
        print(c.line())
    failed = [c for c in checks if c.required and not c.ok]
    if failed:
        print(f"{len(failed)} required prerequisite(s) missing: the live agent cannot start")
        return 3
    print("all required prerequisites present")
    return 0
