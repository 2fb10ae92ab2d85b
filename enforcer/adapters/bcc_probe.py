"""The probes' loader and reader: compile and attach (bcc, in a short-lived child:
enforcer.adapters.bcc_loader), then read the ring buffer and the maps through libbpf
(enforcer.adapters.libbpf), so the agent never keeps LLVM and clang in memory.

Errors from bcc (not root, missing headers, a verifier rejection) are turned into
ProbeError with an explanation and a distinct exit code.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enforcer.errors import ProbeError

if TYPE_CHECKING:
    from enforcer.adapters.libbpf import LoadedBpf

# records read at once: their bytes and each one's (offset, length) in them
Batch = tuple[bytes, list[tuple[int, int]]]

EXIT_NOT_ROOT = 3
EXIT_NO_BCC = 4
EXIT_COMPILE = 5
EXIT_ATTACH = 6
EXIT_NO_TRACEFS = 7

TRACEFS = Path("/sys/kernel/tracing")
# clang's warnings about the kernel headers are noise; errors are still reported
CFLAGS = ["-Wno-macro-redefined", "-w"]


def tracepoint_exists(category: str, event: str) -> bool:
    """Whether tracefs offers this tracepoint on the running kernel."""
    try:
        return (TRACEFS / "events" / category / event / "format").is_file()
    except OSError:  # not readable without privileges
        return False


def require_privileges() -> None:
    """ProbeError (exit 3) unless this process may load tracing programs."""
    if os.geteuid() != 0:
        raise ProbeError(
            "loading eBPF programs needs root (or CAP_BPF, CAP_PERFMON and "
            "CAP_SYS_ADMIN); run enforcer as root, e.g. `sudo enforcer --dry-run`",
            EXIT_NOT_ROOT)


class BccProbe:
    """A compiled and attached program with its ring buffer."""

    def __init__(self, text: str):
        require_privileges()
        if not (TRACEFS / "events").is_dir():
            raise ProbeError(
                f"tracefs is not mounted at {TRACEFS}; mount it with "
                f"`mount -t tracefs nodev {TRACEFS}` (scripts/setup.sh does)", EXIT_NO_TRACEFS)
        self.bpf, self.warnings = load_programs(text, "the eBPF probes")
        self._reader = self.bpf.ring_reader(b"events")

    def poll(self, timeout_ms: int, limit: int) -> Batch:
        """Wait at most timeout_ms for the kernel to wake the reader, then read up to
        `limit` records (see consume)."""
        self._reader.wait(timeout_ms)
        return self._reader.read(limit)

    def set_reader_polling(self, polling: bool) -> None:
        """Tell the probes whether the reader drains on a timer (records need not wake it)
        or sleeps until a record wakes it."""
        self.bpf[b"reader_polling"][ctypes.c_int(0)] = ctypes.c_uint32(1 if polling else 0)

    def pending(self) -> bool:
        """Whether records wait in the ring buffer."""
        return self._reader.pending()

    def consume(self, limit: int) -> Batch:
        """Up to `limit` pending records without waiting, as one bytes object and each
        record's (offset, length) in it: one copy per batch, not per record; the caller
        bounds the batch instead of buffering a whole flood in memory."""
        return self._reader.read(limit)

    def drops(self) -> int:
        """Records the kernel could not put in the ring buffer (all CPUs, since start)."""
        table = self.bpf[b"drops"]
        total = 0
        for value in table.values():
            total += sum(int(v) for v in value)
        return total

    def drop_counts(self) -> tuple[dict[int, int], dict[int, int]]:
        """(drops by record code, drops by CPU), since start; zero entries left out."""
        by_code: dict[int, int] = {}
        by_cpu: dict[int, int] = {}
        table = self.bpf[b"drops"]
        for code in range(len(table.keys())):  # an array: one slot per record code
            per_cpu = [int(v) for v in table[code]]
            if any(per_cpu):
                by_code[code] = sum(per_cpu)
                for cpu, count in enumerate(per_cpu):
                    if count:
                        by_cpu[cpu] = by_cpu.get(cpu, 0) + count
        return by_code, by_cpu

    def set_open_prefixes(self, entries: dict[tuple[int, bytes], int]) -> None:
        """Fill the open-path filter: {(prefix bits, data): set of open classes}."""
        table = self.bpf[b"open_prefixes"]
        for (bits, data), mask in entries.items():
            key = table.Key()
            key.prefixlen = bits
            ctypes.memmove(ctypes.addressof(key) + type(key).data.offset, data, len(data))
            table[key] = ctypes.c_uint16(mask)

    def set_open_suffixes(self, entries: list[tuple[bytes, int]]) -> None:
        """Fill the open-suffix table: [(suffix bytes, set of open classes)]."""
        table = self.bpf[b"open_suffixes"]
        for i, (suffix, mask) in enumerate(entries):
            value = table.Leaf()
            value.len = len(suffix)
            value.classes = mask
            ctypes.memmove(ctypes.addressof(value) + type(value).s.offset, suffix, len(suffix))
            table[ctypes.c_int(i)] = value

    def put_quiet(self, tgid: int, quiet: int, born: int, uid: int, gid: int, cgroup: int,
                  comm: bytes) -> None:
        """A process's detection mask (quiet in events.c; enforcer.kernel.detection_masks)."""
        table = self.bpf[b"quiet"]
        v = table.Leaf()
        v.quiet, v.born, v.cgroup, v.uid, v.gid = quiet, born, cgroup, uid, gid
        raw = comm[:15].ljust(16, b"\0")
        v.comm[0] = int.from_bytes(raw[:8], "little")
        v.comm[1] = int.from_bytes(raw[8:], "little")
        try:
            table[ctypes.c_uint32(tgid)] = v
        except OSError:
            pass  # full: the process passes everything (wider)

    def delete_quiet(self, tgid: int) -> None:
        try:
            del self.bpf[b"quiet"][ctypes.c_uint32(tgid)]
        except KeyError:
            pass  # the kernel dropped it first (exec, fork, exit)

    def quiet_dropped(self) -> int:
        """Records the detection masks dropped in the kernel (all CPUs, since start)."""
        return sum(int(v) for v in self.bpf[b"quiet_dropped"][ctypes.c_int(0)])

    def fd_keys(self) -> TrackedFds:
        """The descriptors the kernel reports closes and dups of (fd_tracked)."""
        return TrackedFds(self.bpf[b"fd_tracked"], self.bpf[b"fd_unsynced"])

    def close(self) -> None:
        """Detach every program and free the maps (the detaches overlap: each waits for
        an RCU grace period in the kernel, seconds per dozen tracepoints on a busy host)."""
        self.warnings += self.bpf.close()


class TrackedFds:
    """fd_tracked in bpf/events.c, written from userspace: enforcer.state.fd_table.FdKeys."""

    def __init__(self, table: Any, unsynced: Any = None):
        self._table = table
        self._unsynced = unsynced

    def add(self, keys: list[int]) -> None:
        """Track these descriptors (tgid << 32 | fd)."""
        for k in keys:
            try:
                self._table[ctypes.c_uint64(k)] = ctypes.c_uint8(1)
            except OSError:
                return  # full: the kernel says so for its own inserts; /proc answers

    def remove(self, keys: list[int]) -> None:
        """Stop tracking these descriptors."""
        for k in keys:
            try:
                del self._table[ctypes.c_uint64(k)]
            except KeyError:
                pass  # the kernel saw the close first

    def synced(self, pid: int) -> None:
        """Clear a new process's mark in fd_unsynced (unless a later pid took its slot)."""
        if self._unsynced is None:
            return
        slot = ctypes.c_uint32(pid & 0xFFFF)
        try:
            if self._unsynced[slot].value == pid:
                self._unsynced[slot] = ctypes.c_uint32(0)
        except (KeyError, OSError):
            pass


def load_programs(text: str, what: str) -> tuple[LoadedBpf, list[str]]:
    """Compile, load and attach `text` in a short-lived child that imports bcc
    (enforcer.adapters.bcc_loader); this process gets the attached tracepoints, programs
    and maps, and never maps LLVM. ProbeError (with the hint for `what`) on failure; the
    compiler's own output is shown then, and kept off the terminal otherwise."""
    import json  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    import enforcer  # noqa: PLC0415

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = dict(os.environ)
    # the child imports enforcer from where this process did (a checkout or an install)
    root = str(Path(enforcer.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    with ours, tempfile.TemporaryFile() as output:
        with theirs:
            child = subprocess.Popen(
                [sys.executable, "-m", "enforcer.adapters.bcc_loader", str(theirs.fileno())],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=output,
                pass_fds=(theirs.fileno(),), env=env)
        assert child.stdin is not None
        with child.stdin:
            child.stdin.write(json.dumps({"text": text, "cflags": CFLAGS}).encode())
        try:
            meta, fds = _receive(ours)
        finally:
            child.wait()
        if meta is None or "error" in meta:
            output.seek(0)
            said = output.read().decode(errors="replace")
            if meta is None:
                raise ProbeError(f"could not load {what}: the compiler exited "
                                 f"{child.returncode} without an answer\n{said[-4000:]}",
                                 EXIT_COMPILE)
            if meta["kind"] == "no-bcc":
                raise ProbeError(
                    f"the bcc Python module is not importable ({meta['error']}); install "
                    "the Debian packages python3-bpfcc and libbpfcc and use a Python with "
                    "system site-packages (scripts/setup.sh does both)", EXIT_NO_BCC)
            sys.stderr.write(said[-4000:])
            raise _compile_error(what, meta["error"])
    try:
        return _loaded(meta, fds), list(meta.get("warnings", []))
    except OSError as exc:  # libbpf missing
        for fd in fds:
            os.close(fd)
        raise ProbeError(f"could not load {what}: {exc}", EXIT_NO_BCC) from exc


def _receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    import json  # noqa: PLC0415

    data = sock.recv(1 << 22)
    if not data:
        return None, []
    meta = json.loads(data)
    if "error" in meta:
        return meta, []
    want = len(meta["maps"]) + len(meta["tracepoints"]) + len(meta["programs"])
    fds: list[int] = []
    while len(fds) < want:
        _, got, _, _ = socket.recv_fds(sock, 16, 253)
        if not got:
            for fd in fds:
                os.close(fd)
            return None, []
        fds += got
    return meta, fds


def _loaded(meta: dict[str, Any], fds: list[int]) -> LoadedBpf:
    from enforcer.adapters.libbpf import LoadedBpf, MapSpec  # noqa: PLC0415

    maps = [MapSpec.from_json(m) for m in meta["maps"]]
    n_maps, n_tps = len(maps), len(meta["tracepoints"])
    return LoadedBpf(zip(maps, fds[:n_maps], strict=True),
                     {tp.encode(): fd for tp, fd in
                      zip(meta["tracepoints"], fds[n_maps:n_maps + n_tps], strict=True)},
                     dict(zip(meta["programs"], fds[n_maps + n_tps:], strict=True)))


def _compile_error(what: str, message: str) -> ProbeError:
    hint = ("kernel headers are missing: install linux-headers-amd64 and link "
            "/lib/modules/$(uname -r)/build to them (scripts/setup.sh does)"
            if "headers" in message.lower() or "kernel source" in message.lower()
            else "the kernel rejected or could not compile the probes; "
            "`enforcer probes render` prints the exact C, `enforcer doctor` "
            "checks the prerequisites")
    code = EXIT_ATTACH if "attach" in message.lower() else EXIT_COMPILE
    return ProbeError(f"could not load {what}: {message.strip()}\n{hint}", code)
