"""The compiling child: `python -m enforcer.adapters.bcc_loader FD`.

Reads {"text": C source, "cflags": [...]} on stdin, compiles, loads and attaches it with
bcc (tracepoint handlers attach themselves), then sends over the SOCK_SEQPACKET socket FD
what the agent keeps: one JSON message (maps with their layouts, tracepoint and program
names, warnings; or {"error", "kind"}), then the fds in that order, in chunks. It exits
without bcc's clean-up: the fds in flight keep programs, attachments and maps alive until
the agent (enforcer.adapters.bcc_probe.load_programs) receives them. The agent process
thereby never maps LLVM and clang, and the compiler's memory goes away with this process.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import socket
import sys
from typing import Any

FDS_PER_MESSAGE = 200  # the kernel takes at most 253 per message (SCM_MAX_FD)


def _send(sock: socket.socket, payload: dict[str, Any]) -> None:
    sock.sendmsg([json.dumps(payload).encode()])


def _raise_memlock() -> str | None:
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY,
                                                      resource.RLIM_INFINITY))
    except (ValueError, OSError) as exc:
        # kernels since 5.11 account BPF memory to the cgroup; the limit no longer matters
        return f"could not raise RLIMIT_MEMLOCK ({exc}); continuing"
    return None


def _maps(bpf: Any, lib: Any) -> list[tuple[dict[str, Any], int]]:
    from enforcer.adapters.libbpf import MapSpec, describe_type  # noqa: PLC0415

    lib.bpf_num_tables.restype = ctypes.c_size_t
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    for fn in (lib.bpf_table_key_size_id, lib.bpf_table_leaf_size_id):
        fn.restype = ctypes.c_size_t
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    out = []
    for i in range(lib.bpf_num_tables(bpf.module)):
        name = lib.bpf_table_name(bpf.module, i)
        table = bpf[name]
        leaf = getattr(table, "sLeaf", table.Leaf)  # per-CPU tables: one CPU's value
        spec = MapSpec(name.decode(), lib.bpf_table_type_id(bpf.module, i),
                       lib.bpf_table_key_size_id(bpf.module, i),
                       lib.bpf_table_leaf_size_id(bpf.module, i),
                       describe_type(table.Key), describe_type(leaf))
        out.append((spec.to_json(), table.map_fd))
    return out


def main(sock_fd: int) -> int:
    sock = socket.socket(fileno=sock_fd)
    request = json.loads(sys.stdin.buffer.read())
    warnings = [w for w in (_raise_memlock(),) if w]
    try:
        from bcc import BPF, lib  # noqa: PLC0415 - the one place bcc is imported
    except ImportError as exc:
        _send(sock, {"error": str(exc), "kind": "no-bcc"})
        return 1
    try:
        bpf = BPF(text=request["text"].encode(), cflags=request["cflags"])
    except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception for all failures
        _send(sock, {"error": str(exc), "kind": "compile"})
        return 1
    maps = _maps(bpf, lib)
    tracepoints = list(bpf.tracepoint_fds.items())
    programs = [(name, fn.fd) for name, fn in bpf.funcs.items()]
    _send(sock, {"maps": [m for m, _ in maps],
                 "tracepoints": [tp.decode() for tp, _ in tracepoints],
                 "programs": [name.decode() for name, _ in programs],
                 "warnings": warnings})
    fds = [fd for _, fd in maps] + [fd for _, fd in tracepoints] + [fd for _, fd in programs]
    for i in range(0, len(fds), FDS_PER_MESSAGE):
        socket.send_fds(sock, [b"F"], fds[i:i + FDS_PER_MESSAGE])
    sock.close()
    return 0


if __name__ == "__main__":
    code = main(int(sys.argv[1]))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # not bcc's atexit clean-up: what it would close now belongs to the agent
