"""The size of the probes' ring buffer, from falco.yaml's `engine` block as Falco 0.44
sizes its syscall buffers (userspace/falco/app/actions/configure_syscall_buffer_size.cpp
and the `engine` comments of its shipped falco.yaml).

Falco: `buf_size_preset` N (1..10) is the size of ONE buffer, 1 MiB << (N - 1), so 4 (its
default) is 8 MiB; `modern_ebpf.cpus_for_each_buffer` C (default 2) shares one buffer
between C online CPUs (0: one buffer for all), and `kmod` has one buffer per CPU.

The agent has a single ring shared by every CPU (Falco's `cpus_for_each_buffer: 0`). So
that a falco.yaml keeps the room Falco would give its events, the ring is as large as
Falco's buffers together: the preset's size times the number of buffers Falco would map
on this node, rounded up to a power of two (the kernel's BPF ring buffer needs one) and
at most MAX_RING_BYTES. Without an `engine` block the ring is DEFAULT_RING_BYTES."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

# index -> bytes of one buffer; 0 is reserved, as in Falco
PRESET_BYTES = (0, *(1 << (20 + i) for i in range(10)))
FALCO_DEFAULT_PRESET = 4          # 8 MiB
FALCO_DEFAULT_CPUS_FOR_EACH_BUFFER = 2
DEFAULT_RING_BYTES = 16 << 20     # the agent's own default: 16 MiB, one ring
MAX_RING_BYTES = PRESET_BYTES[-1]  # 512 MiB, Falco's largest buffer
DEFAULT_PAGE_SIZE = 4096
_NOT_OFFERED = {
    "drop_failed_exit": "failed calls that no rule can match are dropped in the kernel "
                        "already",
    "disable_iterators": "there are no BPF iterators: the process table is read from /proc",
}


def ring_bytes(preset: int, cpus_for_each_buffer: int, online_cpus: int) -> int:
    """Bytes of the one ring that holds what Falco's buffers of `preset` would hold
    together, with one buffer per `cpus_for_each_buffer` online CPUs (0: one for all)."""
    if not 1 <= preset < len(PRESET_BYTES):
        raise ValueError(f"buf_size_preset must be from 1 to {len(PRESET_BYTES) - 1}, "
                         f"not {preset}")
    buffers = 1 if cpus_for_each_buffer <= 0 else math.ceil(max(1, online_cpus)
                                                             / cpus_for_each_buffer)
    total = PRESET_BYTES[preset] * buffers
    return min(MAX_RING_BYTES, 1 << (total - 1).bit_length())


def ring_pages(size: int, page_size: int = DEFAULT_PAGE_SIZE) -> int:
    """Pages of a ring of `size` bytes (ProbeConfig.ringbuf_pages); as Falco, the size must
    be a multiple of the page size and more than two pages."""
    if size % page_size or size // page_size <= 2:
        raise ValueError(f"a ring of {size} bytes is not more than two pages of "
                         f"{page_size} bytes (or not a multiple of one): choose a larger "
                         "buf_size_preset")
    return size // page_size


def engine_ring_bytes(engine: dict[str, Any] | None, warn: Callable[[str], None],
                      online_cpus: int | None = None) -> int | None:
    """The ring's size for falco.yaml's validated `engine` block, or None (no block, or
    an engine kind that has no ring here: the agent's default). `warn` receives one
    sentence per setting that is read but changed or dropped."""
    if engine is None:
        return None
    cpus = online_cpus if online_cpus is not None else (os.sysconf("SC_NPROCESSORS_ONLN")
                                                         or 1)
    kind = engine.get("kind", "modern_ebpf")
    if kind in ("replay", "nodriver"):
        warn(f"engine.kind: {kind} does not apply: the agent always reads its own eBPF "
             "probes (its --source decides); the ring keeps its default size")
        return None
    block = engine.get(kind) or {}
    if kind == "kmod":
        warn("engine.kind: kmod: there is no kernel module; the agent's eBPF probes are "
             "used, their one ring sized as kmod's per-CPU buffers together")
        per_buffer = 1
    else:
        per_buffer = block.get("cpus_for_each_buffer", FALCO_DEFAULT_CPUS_FOR_EACH_BUFFER)
    for key, why in _NOT_OFFERED.items():
        if block.get(key):
            warn(f"engine.{kind}.{key}: true is not offered and is ignored ({why})")
    return ring_bytes(block.get("buf_size_preset", FALCO_DEFAULT_PRESET), per_buffer, cpus)
