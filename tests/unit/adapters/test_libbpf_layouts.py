"""Map layouts cross from the compiling child to the agent as JSON: every shape bcc gives
our maps (integers, arrays, nested and anonymous structs and unions, bitfields, packed
structs) comes back with the same size, offsets and values."""

from __future__ import annotations

import ctypes
import json

import pytest

from enforcer.adapters.libbpf import MapSpec, build_type, describe_type


class Inner(ctypes.Union):
    _fields_ = [("u32", ctypes.c_uint32), ("bytes", ctypes.c_ubyte * 4)]


class Key(ctypes.Structure):
    _fields_ = [("prefixlen", ctypes.c_uint32), ("data", ctypes.c_ubyte * 128)]


class Leaf(ctypes.Structure):
    _anonymous_ = ("__anon0",)
    _fields_ = [("flags", ctypes.c_uint32, 3), ("more", ctypes.c_uint32, 29),
                ("__anon0", Inner), ("comm", ctypes.c_char * 16),
                ("deps", ctypes.c_uint64 * 4), ("sign", ctypes.c_int8)]


class Packed(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("a", ctypes.c_uint8), ("b", ctypes.c_uint64)]


@pytest.mark.parametrize("t", [ctypes.c_uint32, ctypes.c_int, ctypes.c_uint64,
                               ctypes.c_char * 16, Key, Leaf, Packed])
def test_round_trip_keeps_size_and_offsets(t: type) -> None:
    rebuilt = build_type(json.loads(json.dumps(describe_type(t))))
    assert ctypes.sizeof(rebuilt) == ctypes.sizeof(t)
    for f in getattr(t, "_fields_", []):
        assert getattr(rebuilt, f[0]).offset == getattr(t, f[0]).offset


def test_values_written_through_the_rebuilt_type_read_back_in_the_original() -> None:
    rebuilt = build_type(describe_type(Leaf))
    v = rebuilt()
    v.flags, v.more, v.u32, v.comm, v.sign = 5, 1 << 20, 0xDEADBEEF, b"bash", -3
    v.deps[2] = 42
    orig = Leaf.from_buffer_copy(bytes(v))
    assert (orig.flags, orig.more, orig.u32, orig.comm, orig.sign) == (
        5, 1 << 20, 0xDEADBEEF, b"bash", -3)
    assert list(orig.deps) == [0, 0, 42, 0]


def test_spec_round_trips_through_json() -> None:
    spec = MapSpec("open_prefixes", 11, 132, 2, describe_type(Key),
                   describe_type(ctypes.c_uint16))
    assert MapSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_an_unknown_ctypes_type_is_refused() -> None:
    with pytest.raises(TypeError, match="cannot describe"):
        describe_type(ctypes.c_void_p)
