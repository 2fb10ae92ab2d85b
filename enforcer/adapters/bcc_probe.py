"""The only module that imports bcc: compile, attach, read the ring buffer and the maps.

Errors from bcc (not root, missing headers, a verifier rejection) are turned into
ProbeError with an explanation and a distinct exit code.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from enforcer.errors import ProbeError

EXIT_NOT_ROOT = 3
EXIT_NO_BCC = 4
EXIT_COMPILE = 5
EXIT_ATTACH = 6
EXIT_NO_TRACEFS = 7

TRACEFS = Path("/sys/kernel/tracing")


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


def _raise_memlock() -> str | None:
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY,
                                                      resource.RLIM_INFINITY))
    except (ValueError, OSError) as exc:
        # kernels since 5.11 account BPF memory to the cgroup; the limit no longer matters
        return f"could not raise RLIMIT_MEMLOCK ({exc}); continuing"
    return None


class BccProbe:
    """A compiled and attached program with its ring buffer."""

    def __init__(self, text: str, on_record: Callable[[bytes], bool | None]):
        require_privileges()
        if not (TRACEFS / "events").is_dir():
            raise ProbeError(
                f"tracefs is not mounted at {TRACEFS}; mount it with "
                f"`mount -t tracefs nodev {TRACEFS}` (scripts/setup.sh does)", EXIT_NO_TRACEFS)
        try:
            from bcc import BPF  # noqa: PLC0415 - optional system package, import lazily
        except ImportError as exc:
            raise ProbeError(
                f"the bcc Python module is not importable ({exc}); install the Debian "
                "packages python3-bpfcc and libbpfcc and use a Python with system "
                "site-packages (scripts/setup.sh does both)", EXIT_NO_BCC) from exc
        self.warnings: list[str] = []
        warning = _raise_memlock()
        if warning:
            self.warnings.append(warning)
        stderr_fd = sys.stderr.fileno() if hasattr(sys.stderr, "fileno") else None
        try:
            self.bpf = _quiet_compile(BPF, text, stderr_fd)
        except Exception as exc:  # bcc raises bare Exception for compile/verifier failures
            message = str(exc)
            hint = ("kernel headers are missing: install linux-headers-amd64 and link "
                    "/lib/modules/$(uname -r)/build to them (scripts/setup.sh does)"
                    if "headers" in message.lower() or "kernel source" in message.lower()
                    else "the kernel rejected or could not compile the probes; "
                    "`enforcer probes render` prints the exact C, `enforcer doctor` "
                    "checks the prerequisites")
            code = EXIT_ATTACH if "attach" in message.lower() else EXIT_COMPILE
            raise ProbeError(f"could not load the eBPF probes: {message.strip()}\n{hint}",
                             code) from exc
        self._on_record = on_record

        def _cb(_ctx: object, data: int, size: int) -> int:
            # a False answer ends this poll early (the record itself is kept): the caller
            # processes a bounded batch instead of buffering a whole flood in memory
            return -1 if on_record(ctypes.string_at(data, size)) is False else 0

        self._cb = _cb
        self.bpf[b"events"].open_ring_buffer(_cb)

    def poll(self, timeout_ms: int) -> None:
        """Deliver pending records to the callback, waiting at most timeout_ms."""
        self.bpf.ring_buffer_poll(timeout_ms)

    def set_reader_polling(self, polling: bool) -> None:
        """Tell the probes whether the reader drains on a timer (records need not wake it)
        or sleeps until a record wakes it."""
        self.bpf[b"reader_polling"][ctypes.c_int(0)] = ctypes.c_uint32(1 if polling else 0)

    def consume(self) -> None:
        """Deliver whatever is pending without waiting."""
        self.bpf.ring_buffer_consume()

    def drops(self) -> int:
        """Records the kernel could not put in the ring buffer (all CPUs, since start)."""
        table = self.bpf[b"drops"]
        total = 0
        for value in table.values():
            total += sum(int(v) for v in value)
        return total

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

    def close(self) -> None:
        """Detach every program and free the maps.

        Each detach waits for an RCU grace period in the kernel; done one after the other
        (as bcc's cleanup does) that is seconds per dozen tracepoints on a busy host. In
        parallel the waits overlap.
        """
        attached = list(self.bpf.tracepoint_fds)
        if attached:
            with ThreadPoolExecutor(max_workers=min(64, len(attached))) as pool:
                for tp, exc in zip(attached, pool.map(self._detach, attached), strict=True):
                    if exc is not None:
                        self.warnings.append(f"detaching {tp!r}: {exc}")
        self.bpf.cleanup()

    def _detach(self, tp: bytes) -> Exception | None:
        try:
            self.bpf.detach_tracepoint(tp)
        except Exception as exc:  # noqa: BLE001 - reported, and cleanup() retries the rest
            return exc
        return None


def _quiet_compile(bpf_cls: type, text: str, stderr_fd: int | None) -> object:
    """Compile with clang's warnings about the kernel headers kept off the user's terminal,
    unless the compile fails (then they are the explanation and are shown)."""
    if stderr_fd is None:
        return bpf_cls(text=text.encode(), cflags=["-Wno-macro-redefined", "-w"])
    saved = os.dup(stderr_fd)
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), stderr_fd)
        try:
            return bpf_cls(text=text.encode(), cflags=["-Wno-macro-redefined", "-w"])
        except Exception:
            os.dup2(saved, stderr_fd)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace")[-4000:])
            raise
        finally:
            os.dup2(saved, stderr_fd)
            os.close(saved)
