"""The ring buffer is read in batches from its memory (enforcer.adapters.libbpf.committed):
the header walk keeps committed records in order, skips discarded ones, stops at the first
record still being written, reads a record that wraps around the end of the data area
whole (the area is mapped twice in a row), and honours the batch limit. The kernel's
layout is built here byte for byte (kernel/bpf/ringbuf.c)."""

from __future__ import annotations

import struct

import pytest

from enforcer.adapters.libbpf import RB_BUSY, RB_DISCARD, RB_HDR, committed

SIZE = 256  # data area (a power of two)
BASE = 64  # where the data area starts in the mapping (a page, in the kernel)


class Ring:
    """A data area mapped twice, plus a producer that reserves, commits and discards."""

    def __init__(self, start: int = 0):
        self.mem = bytearray(BASE + 2 * SIZE)
        self.prod = start
        self.cons = start

    def put(self, payload: bytes, flags: int = 0) -> int:
        pos = self.prod
        rec = struct.pack("<II", len(payload) | flags, 0) + payload
        rec += b"\0" * (-len(rec) % 8)
        for i, b in enumerate(rec):  # both mappings of each byte
            off = (pos + i) % SIZE
            self.mem[BASE + off] = b
            self.mem[BASE + SIZE + off] = b
        self.prod += len(rec)
        return pos

    def set_header(self, pos: int, value: int) -> None:
        for base in (BASE, BASE + SIZE):
            struct.pack_into("<I", self.mem, base + pos % SIZE, value)

    def walk(self, limit: int = 100) -> tuple[int, list[bytes]]:
        end, spans = committed(memoryview(self.mem), BASE, self.cons, self.prod, SIZE - 1,
                               limit)
        # the reader copies [cons, end) once and slices the records out of the copy
        start = BASE + self.cons % SIZE
        buf = bytes(self.mem[start:start + (end - self.cons)])
        return end, [buf[o:o + n] for o, n in spans]


def test_committed_records_in_order_and_discarded_ones_skipped() -> None:
    ring = Ring()
    ring.put(b"first")
    ring.put(b"dropped", RB_DISCARD)
    ring.put(b"second")
    end, got = ring.walk()
    assert got == [b"first", b"second"]
    assert end == ring.prod


def test_a_record_still_being_written_ends_the_batch() -> None:
    ring = Ring()
    ring.put(b"done")
    busy = ring.put(b"writing", RB_BUSY)
    ring.put(b"after")  # committed, but behind the busy one: must wait for it
    end, got = ring.walk()
    assert got == [b"done"]
    assert end == busy
    ring.set_header(busy, len(b"writing"))  # committed now
    ring.cons = end
    end, got = ring.walk()
    assert got == [b"writing", b"after"]
    assert end == ring.prod


@pytest.mark.parametrize("start", [SIZE - RB_HDR, SIZE - 16, SIZE - 24, 3 * SIZE - 8])
def test_a_record_across_the_end_of_the_area_is_read_whole(start: int) -> None:
    ring = Ring(start)
    payload = bytes(range(40))
    ring.put(payload)
    ring.put(b"next")
    _end, got = ring.walk()
    assert got == [payload, b"next"]


def test_the_limit_bounds_the_batch() -> None:
    ring = Ring()
    for i in range(5):
        ring.put(bytes([i]) * 9)
    end, got = ring.walk(limit=2)
    assert got == [b"\0" * 9, b"\1" * 9]
    ring.cons = end
    _end, got = ring.walk()
    assert got == [bytes([i]) * 9 for i in (2, 3, 4)]


def test_nothing_pending_reads_nothing() -> None:
    ring = Ring(40)
    assert ring.walk() == (40, [])


def records_of_one_size(ring: Ring, n: int) -> list[bytes]:
    out = [bytes([65 + i]) * 12 for i in range(n)]
    for p in out:
        ring.put(p)
    return out


@pytest.mark.parametrize("start", [0, SIZE - 40, 2 * SIZE - 8])
def test_a_run_of_one_size_is_read_whole_and_in_order(start: int) -> None:
    """Our probes' records all have one size: the reader checks a run of them at once."""
    ring = Ring(start)
    want = records_of_one_size(ring, 10)  # 10 x 24 bytes: wraps for every start but 0
    end, got = ring.walk()
    assert got == want and end == ring.prod


@pytest.mark.parametrize("where", [0, 3, 9])
def test_a_busy_record_inside_a_run_of_one_size_stops_there(where: int) -> None:
    ring = Ring(SIZE - 40)
    want = records_of_one_size(ring, 10)
    busy = ring.cons + where * 24
    ring.set_header(busy, 12 | RB_BUSY)
    end, got = ring.walk()
    assert got == want[:where] and end == busy


@pytest.mark.parametrize("where", [0, 4, 9])
def test_a_discarded_record_inside_a_run_of_one_size_is_skipped(where: int) -> None:
    ring = Ring(SIZE - 40)
    want = records_of_one_size(ring, 10)
    ring.set_header(ring.cons + where * 24, 12 | RB_DISCARD)
    end, got = ring.walk()
    assert got == want[:where] + want[where + 1:] and end == ring.prod
