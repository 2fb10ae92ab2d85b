"""Loaded BPF programs and maps, driven through libbpf (Debian's libbpf1), without bcc.

bcc is what compiles our C (enforcer.adapters.bcc_loader, in a short-lived child), but
loading bcc maps LLVM and clang into the process: ~60 MB resident before anything is
compiled, and the compile leaves another ~120 MB behind. The agent only needs what the
compile produced: attached tracepoints, program fds and map fds. The child hands those
over (SCM_RIGHTS) with each map's key and value layouts, and this module gives them the
small part of bcc's table interface the agent uses (`Key()`, `Leaf()`, `table[key]`,
`table[key] = value`, `del table[key]`, `keys()`, `values()`, ring buffers), on top of
libbpf's map and ring-buffer calls.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import select
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from typing import Any

# map types whose values are per CPU (one value per possible CPU, each 8-byte aligned)
PERCPU_TYPES = frozenset({5, 6, 10})  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
ARRAY_TYPES = frozenset({2, 6})  # ARRAY, PERCPU_ARRAY: delete zeroes the entry
RINGBUF = 27  # no keys or values of its own

RingBufferCallback = Callable[[Any, int, int], int]
_RB_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)

_lib: ctypes.CDLL | None = None


def libbpf() -> ctypes.CDLL:
    """The libbpf shared library with the prototypes we call (loaded once)."""
    global _lib
    if _lib is not None:
        return _lib
    try:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError as exc:
        raise OSError(f"libbpf is not installed ({exc}); install the Debian package "
                      "libbpf1 (scripts/setup.sh does)") from exc
    vp, i = ctypes.c_void_p, ctypes.c_int
    for name, res, args in (
            ("bpf_map_update_elem", i, [i, vp, vp, ctypes.c_uint64]),
            ("bpf_map_lookup_elem", i, [i, vp, vp]),
            ("bpf_map_delete_elem", i, [i, vp]),
            ("bpf_map_get_next_key", i, [i, vp, vp]),
            ("bpf_map_update_batch", i, [i, vp, vp, ctypes.POINTER(ctypes.c_uint32), vp]),
            ("ring_buffer__new", vp, [i, _RB_CB, vp, vp]),
            ("ring_buffer__poll", i, [vp, i]),
            ("ring_buffer__consume", i, [vp]),
            ("ring_buffer__free", None, [vp]),
            ("bpf_obj_get_info_by_fd", i, [i, vp, ctypes.POINTER(ctypes.c_uint32)]),
            ("libbpf_num_possible_cpus", i, [])):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    _lib = lib
    return lib


# -- ctypes layouts, described as JSON by the compiling child and rebuilt here ------------

_SIMPLE: dict[str, type] = {t._type_: t for t in (  # type: ignore[attr-defined]
    ctypes.c_bool, ctypes.c_char, ctypes.c_byte, ctypes.c_ubyte, ctypes.c_short,
    ctypes.c_ushort, ctypes.c_int, ctypes.c_uint, ctypes.c_long, ctypes.c_ulong,
    ctypes.c_longlong, ctypes.c_ulonglong, ctypes.c_float, ctypes.c_double,
    ctypes.c_wchar)}


def describe_type(t: Any) -> Any:
    """A JSON-able description of a ctypes type (simple, array, struct or union)."""
    if isinstance(t, type) and issubclass(t, ctypes.Array):
        return {"array": describe_type(t._type_), "n": t._length_}
    if isinstance(t, type) and issubclass(t, ctypes.Structure | ctypes.Union):
        fields = []
        for f in t._fields_:
            fields.append([f[0], describe_type(f[1]), *f[2:]])
        return {"kind": "union" if issubclass(t, ctypes.Union) else "struct",
                "name": t.__name__, "pack": getattr(t, "_pack_", 0),
                "anon": list(getattr(t, "_anonymous_", ())), "fields": fields}
    code = getattr(t, "_type_", None)
    if isinstance(code, str) and code in _SIMPLE:
        return code
    raise TypeError(f"cannot describe the ctypes type {t!r}")


def build_type(desc: Any) -> Any:
    """The ctypes type a describe_type() description stands for."""
    if isinstance(desc, str):
        return _SIMPLE[desc]
    if "array" in desc:
        return build_type(desc["array"]) * desc["n"]
    base = ctypes.Union if desc["kind"] == "union" else ctypes.Structure
    ns: dict[str, Any] = {"_fields_": [(f[0], build_type(f[1]), *f[2:])
                                       for f in desc["fields"]]}
    if desc["anon"]:
        ns["_anonymous_"] = desc["anon"]
    if desc["pack"]:
        ns["_pack_"] = desc["pack"]
    return type(desc["name"], (base,), ns)


@dataclass(frozen=True)
class MapSpec:
    """What the child says of one map (its fd travels beside it)."""

    name: str
    map_type: int
    key_size: int
    value_size: int
    key: Any    # describe_type() of the key
    leaf: Any   # describe_type() of one value (one CPU's, for per-CPU maps)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.map_type, "key_size": self.key_size,
                "value_size": self.value_size, "key": self.key, "leaf": self.leaf}

    @staticmethod
    def from_json(d: dict[str, Any]) -> MapSpec:
        return MapSpec(d["name"], d["type"], d["key_size"], d["value_size"], d["key"],
                       d["leaf"])


def _check(ret: int, what: str) -> None:
    if ret < 0:
        err = -ret if ret != -1 else ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


class BpfMap:
    """One map, by fd, with its key and value layouts."""

    def __init__(self, spec: MapSpec, fd: int, ncpus: int):
        self.name = spec.name
        self.fd = fd
        self.map_type = spec.map_type
        self.Key = build_type(spec.key)
        self.Leaf = build_type(spec.leaf)
        if spec.map_type != RINGBUF and (ctypes.sizeof(self.Key) != spec.key_size
                                         or ctypes.sizeof(self.Leaf) != spec.value_size):
            raise ValueError(f"map {spec.name}: layout does not match the kernel's sizes")
        self.percpu = spec.map_type in PERCPU_TYPES
        self._ncpus = ncpus
        self._stride = (spec.value_size + 7) // 8 * 8
        self._lib = libbpf()

    def _key(self, key: Any) -> Any:
        if isinstance(key, int):
            return self.Key(key)
        if ctypes.sizeof(key) != ctypes.sizeof(self.Key):
            raise TypeError(f"map {self.name}: key of {ctypes.sizeof(key)} bytes, "
                            f"not {ctypes.sizeof(self.Key)}")
        return key

    def __getitem__(self, key: Any) -> Any:
        k = self._key(key)
        size = self._stride * self._ncpus if self.percpu else ctypes.sizeof(self.Leaf)
        buf = ctypes.create_string_buffer(size)
        if self._lib.bpf_map_lookup_elem(self.fd, ctypes.byref(k), buf) < 0:
            raise KeyError(key)
        if not self.percpu:
            return self.Leaf.from_buffer_copy(buf)
        out = [self.Leaf.from_buffer_copy(buf, i * self._stride) for i in range(self._ncpus)]
        # per-CPU integers come back as plain ints (what bcc's per-CPU tables give)
        return [v.value for v in out] if hasattr(self.Leaf, "value") else out

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.percpu:
            raise TypeError(f"map {self.name}: per-CPU values are only read")
        k = self._key(key)
        v = self.Leaf(value) if isinstance(value, int) else value
        _check(self._lib.bpf_map_update_elem(self.fd, ctypes.byref(k), ctypes.byref(v), 0),
               f"updating map {self.name}")

    def __delitem__(self, key: Any) -> None:
        k = self._key(key)
        if self.map_type in ARRAY_TYPES:  # array entries cannot go: zero them
            self[k] = self.Leaf()
            return
        if self._lib.bpf_map_delete_elem(self.fd, ctypes.byref(k)) < 0:
            raise KeyError(key)

    def keys(self) -> list[Any]:
        out: list[Any] = []
        prev = None
        while True:
            nxt = self.Key()
            ret = self._lib.bpf_map_get_next_key(
                self.fd, ctypes.byref(prev) if prev is not None else None, ctypes.byref(nxt))
            if ret < 0:
                return out
            out.append(nxt)
            prev = nxt

    def values(self) -> list[Any]:
        out = []
        for k in self.keys():
            try:
                out.append(self[k])
            except KeyError:  # deleted meanwhile
                continue
        return out

    def items_update_batch(self, keys: Any, values: Any) -> None:
        """Write many entries in one call (Linux 5.6+)."""
        count = ctypes.c_uint32(len(keys))
        _check(self._lib.bpf_map_update_batch(self.fd, keys, values, ctypes.byref(count),
                                              None), f"batch update of map {self.name}")


class LoadedBpf:
    """What a compile left: attached tracepoints (perf event fds), programs and maps.

    Closing the tracepoint fds detaches the programs; closing the last map fd frees the
    map. Indexing by map name (`loaded[b"events"]` or `loaded["events"]`) gives a BpfMap.
    """

    def __init__(self, maps: Iterable[tuple[MapSpec, int]], tracepoints: dict[bytes, int],
                 programs: dict[str, int]):
        ncpus = libbpf().libbpf_num_possible_cpus()
        _check(ncpus, "counting the possible CPUs")
        self.maps = {spec.name: BpfMap(spec, fd, ncpus) for spec, fd in maps}
        self.tracepoint_fds = dict(tracepoints)
        self.funcs = {name: _Program(fd) for name, fd in programs.items()}
        self._rings: list[tuple[int, Any]] = []  # (ring_buffer *, callback kept alive)
        self._readers: list[RingReader] = []

    def __getitem__(self, name: str | bytes) -> BpfMap:
        key = name.decode() if isinstance(name, bytes) else name
        return self.maps[key]

    def open_ring_buffer(self, name: str | bytes, callback: RingBufferCallback) -> None:
        """Deliver the records of ring buffer `name` to callback(ctx, data, size) from
        ring_buffer_poll/consume; a negative return ends that poll early."""
        cb = _RB_CB(callback)
        lib = libbpf()
        rb = lib.ring_buffer__new(self[name].fd, cb, None, None)
        if not rb:
            raise OSError(ctypes.get_errno(), f"opening ring buffer {name!r}")
        self._rings.append((rb, cb))

    def ring_reader(self, name: str | bytes) -> RingReader:
        """A batch reader of ring buffer `name` (see RingReader); closed with this."""
        reader = RingReader(self[name].fd)
        self._readers.append(reader)
        return reader

    def ring_buffer_poll(self, timeout_ms: int = -1) -> None:
        for rb, _ in self._rings:
            libbpf().ring_buffer__poll(rb, timeout_ms)

    def ring_buffer_consume(self) -> None:
        for rb, _ in self._rings:
            libbpf().ring_buffer__consume(rb)

    def detach_tracepoint(self, tp: bytes) -> None:
        """Detach one tracepoint (waits for an RCU grace period in the kernel)."""
        fd = self.tracepoint_fds.pop(tp)
        os.close(fd)

    def close(self) -> list[str]:
        """Detach every tracepoint (in parallel: each close waits for an RCU grace
        period), then release the ring buffers, programs and maps. Returns warnings.

        Idempotent, and safe from two threads at once: what is to be released is taken
        out of this object (under the GIL, in one statement each) before anything is
        closed, so a second close finds nothing left. Closing a descriptor number twice
        would close whatever file of this process got the number in between."""
        warnings: list[str] = []
        rings, self._rings = self._rings, []
        readers, self._readers = self._readers, []
        funcs, self.funcs = self.funcs, {}
        maps, self.maps = self.maps, {}
        attached = list(self.tracepoint_fds)
        if attached:
            with ThreadPoolExecutor(max_workers=min(64, len(attached))) as pool:
                for tp, exc in zip(attached, pool.map(self._detach, attached), strict=True):
                    if exc is not None and not isinstance(exc, KeyError):
                        warnings.append(f"detaching {tp!r}: {exc}")
        for rb, _ in rings:
            libbpf().ring_buffer__free(rb)
        for reader in readers:
            reader.close()
        for fd in [p.fd for p in funcs.values()] + [m.fd for m in maps.values()]:
            try:
                os.close(fd)
            except OSError as exc:  # ours alone: a bug to see, not to hide
                warnings.append(f"closing descriptor {fd}: {exc}")
        return warnings

    def _detach(self, tp: bytes) -> Exception | None:
        try:
            self.detach_tracepoint(tp)
        except (OSError, KeyError) as exc:
            return exc
        return None

    def cleanup(self) -> None:
        """bcc's name for close()."""
        self.close()


@dataclass(frozen=True)
class _Program:
    fd: int


# -- reading a ring buffer map straight from its shared memory ------------------------------

RB_BUSY = 1 << 31  # record reserved, not committed yet
RB_DISCARD = 1 << 30  # record discarded by the program
RB_HDR = 8  # u32 length (with the two bits above) + u32 page offset
_LEN = ~(RB_BUSY | RB_DISCARD) & 0xFFFFFFFF


def committed(data: Any, base: int, cons: int, prod: int, mask: int,
              limit: int) -> tuple[int, list[tuple[int, int]]]:
    """Walk the record headers of a ring buffer's data area from `cons` to `prod`.

    `data` is the memory (mapped twice in a row, so that a record that wraps is
    contiguous), `base` the offset of the data area in it. Stops at the first record still
    being written (BUSY) or after `limit` records. Returns the position up to which the
    records are complete, and each kept record's (offset from `cons`, length); discarded
    ones are skipped. Pure, for the tests; the reader copies [cons, end) once afterwards:
    every header it saw committed was committed before the copy, so the data is complete.
    """
    out: list[tuple[int, int]] = []
    # headers are 8-aligned native u32s: read as such, no struct call per record
    words = data if data.format == "I" else data.cast("I")
    pos = cons
    while pos < prod and len(out) < limit:
        hdr = words[(base + (pos & mask)) >> 2]
        if hdr & RB_BUSY:
            break
        length = hdr & _LEN
        stride = (length + RB_HDR + 7) & ~7
        if not hdr & RB_DISCARD:
            # Our probes' records all have one size: check a run of headers at once (a
            # strided slice, compared in C) rather than one by one in Python.
            n = min((prod - pos) // stride, limit - len(out))
            if n > 1:
                first = (base + (pos & mask)) >> 2
                run = words[first:first + n * (stride >> 2):stride >> 2].tolist()
                if run.count(hdr) == n:
                    rel = pos - cons + RB_HDR
                    out += zip(range(rel, rel + n * stride, stride), repeat(length, n),
                               strict=True)
                    pos += n * stride
                    continue
            out.append((pos - cons + RB_HDR, length))
        pos += stride
    return pos, out


class RingReader:
    """A BPF ring buffer read in batches from its memory mapping, without a callback per
    record: libbpf's reader calls back into Python (a ctypes trampoline and a copy) once
    per record, which at 100 000 records/s was a measurable share of the agent's time.

    The layout is the kernel's (kernel/bpf/ringbuf.c): one writable page holding the
    consumer position, then (read-only) one page holding the producer position and the data
    area mapped twice. Positions are read and written as aligned 8-byte words; x86-64 and
    arm64 keep such accesses whole, and the kernel orders a record's data before the
    header's commit, which is read first here.
    """

    def __init__(self, fd: int):
        info = (ctypes.c_uint8 * 96)()
        size = ctypes.c_uint32(96)
        _check(libbpf().bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)),
               "reading the ring buffer's size")
        self.size = int.from_bytes(bytes(info[16:20]), "little")  # bpf_map_info.max_entries
        page = mmap.PAGESIZE
        self._cons_map = mmap.mmap(fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._data_map = mmap.mmap(fd, page + 2 * self.size, mmap.MAP_SHARED,
                                   mmap.PROT_READ, offset=page)
        self._cons = memoryview(self._cons_map).cast("Q")
        self._data = memoryview(self._data_map)
        self._words = self._data.cast("I")
        self._prod = self._data[:8].cast("Q")
        self._base = page
        self._mask = self.size - 1
        self._epoll = select.epoll()
        self._epoll.register(fd, select.EPOLLIN)

    def pending(self) -> bool:
        """Whether records wait to be read."""
        return self._prod[0] > self._cons[0]

    def wait(self, timeout_ms: int) -> None:
        """Sleep until the kernel wakes the reader or timeout_ms pass (as libbpf's
        ring_buffer__poll: records emitted with BPF_RB_NO_WAKEUP do not end the wait)."""
        self._epoll.poll(timeout_ms / 1000 if timeout_ms >= 0 else -1)

    def read(self, limit: int) -> tuple[bytes, list[tuple[int, int]]]:
        """Up to `limit` records: one bytes object holding them and each record's
        (offset, length) in it. Their space in the ring is released at once."""
        cons = self._cons[0]
        end, spans = committed(self._words, self._base, cons, self._prod[0], self._mask,
                               limit)
        if end == cons:
            return b"", []
        start = self._base + (cons & self._mask)
        buf = self._data[start:start + (end - cons)].tobytes()
        self._cons[0] = end  # the kernel may reuse the space now
        return buf, spans

    def close(self) -> None:
        """Unmap and stop polling (idempotent)."""
        if self._epoll.closed:
            return
        self._epoll.close()
        for view in (self._prod, self._cons, self._words, self._data):
            view.release()
        self._cons_map.close()
        self._data_map.close()
