"""The BTF reader that gives the probes the running kernel's struct offsets: checked on a
small blob built here (a member inside an anonymous union inside an anonymous struct, a
typedef'd member type, a bitfield-style offset) and, where the host has it, on its kernel."""

from __future__ import annotations

import os
import struct

import pytest

from enforcer.sources import kernel_btf
from enforcer.sources.kernel_btf import Btf, socket_offsets
from enforcer.sources.probe import ProbeConfig, render


class _Blob:
    """A BTF blob written type by type (ids from 1)."""

    def __init__(self) -> None:
        self.types = b""
        self.strings = b"\0"
        self.next_id = 1

    def name(self, text: str) -> int:
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def add(self, kind: int, name: str, size_or_type: int, tail: bytes = b"", vlen: int = 0,
            kflag: int = 0) -> int:
        info = kind << 24 | vlen | kflag << 31
        self.types += struct.pack("<III", self.name(name) if name else 0, info,
                                  size_or_type) + tail
        self.next_id += 1
        return self.next_id - 1

    def struct(self, name: str, size: int, members: list[tuple[str, int, int]],
               kind: int = 4, kflag: int = 0) -> int:
        tail = b"".join(struct.pack("<III", self.name(m) if m else 0, t, off)
                        for m, t, off in members)
        return self.add(kind, name, size, tail, len(members), kflag)

    def bytes(self) -> bytes:
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types),
                          len(self.strings))
        return hdr + self.types + self.strings


def _blob() -> bytes:
    b = _Blob()
    u32 = b.add(1, "u32", 4, struct.pack("<I", 32))
    u16 = b.add(1, "u16", 2, struct.pack("<I", 16))
    be32 = b.add(8, "__be32", u32)  # a typedef
    inner = b.struct("", 8, [("skc_daddr", be32, 0), ("skc_rcv_saddr", be32, 32)])
    union = b.struct("", 8, [("skc_addrpair", u32, 0), ("", inner, 0)], kind=5)
    # kind_flag: offsets carry a bitfield size in their top byte
    b.struct("sock_common", 24, [("", union, 0), ("skc_num", u16, 8 << 24 | 112),
                                 ("skc_family", u16, 16 << 24 | 128)], kflag=1)
    return b.bytes()


def test_members_inside_anonymous_members_and_bitfield_offsets() -> None:
    btf = Btf(_blob())
    assert btf.offset("sock_common", "skc_daddr") == 0
    assert btf.offset("sock_common", "skc_rcv_saddr") == 4
    assert btf.offset("sock_common", "skc_num") == 14
    assert btf.offset("sock_common", "skc_family") == 16
    assert btf.offset("sock_common", "nosuch") is None
    assert btf.offset("nosuch", "skc_num") is None


def test_a_missing_member_means_no_socket_reads() -> None:
    assert socket_offsets(_blob()) is None  # no task_struct: the tracepoint fallback
    with pytest.raises(kernel_btf.BtfError):
        Btf(b"\0" * 32)


def test_offsets_render_as_defines_and_switch_the_socket_reads_on() -> None:
    offsets = {k: i * 8 for i, k in enumerate(kernel_btf.WANTED)}
    text = render(ProbeConfig(sock_offsets=offsets))
    assert "#define SOCK_READS 1" in text and "#define OFF_SK_NUM " in text
    assert "connect_tuple(e, e->a[0])" in text and "accept_tuple(e, rv)" in text
    assert "#define SOCK_READS 0" in render(ProbeConfig())


def test_the_running_kernel_has_every_member() -> None:
    assert os.path.exists(kernel_btf.VMLINUX), "the kernel has no BTF (CONFIG_DEBUG_INFO_BTF)"
    offsets = kernel_btf.running_kernel_offsets()
    assert offsets is not None
    # struct sock starts with struct sock_common: the two ends sit in its first bytes
    assert max(offsets[k] for k in offsets if k.startswith("OFF_SK_")) < 256
