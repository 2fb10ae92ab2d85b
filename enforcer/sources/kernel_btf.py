"""Where the running kernel keeps the few struct members the probes read, taken from its
own BTF (/sys/kernel/btf/vmlinux): the walk from a descriptor to its socket and the
socket's two ends (bpf/events.c, fd_sock()). The kernel headers installed on a host may
belong to another kernel than the one running, so their layouts are never trusted; this
is what CO-RE relocation does for a libbpf program, done once before the compile.

Pure Python over the BTF format (Documentation/bpf/btf.rst): header, type records, strings.
"""

from __future__ import annotations

import struct
from functools import lru_cache

VMLINUX = "/sys/kernel/btf/vmlinux"
_MAGIC = 0xEB9F
_STRUCT, _UNION = 4, 5
_MODIFIERS = frozenset({8, 9, 10, 11, 18})  # typedef, volatile, const, restrict, type tag
# bytes each kind's record has after its 12-byte head: (fixed, per vlen item)
_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0),
          15: (0, 12), 17: (4, 0), 19: (0, 12)}

# define name -> (struct, member): what fd_sock() and sock_ends() in bpf/events.c read
WANTED: dict[str, tuple[str, str]] = {
    "OFF_TASK_FILES": ("task_struct", "files"),
    "OFF_FILES_FDT": ("files_struct", "fdt"),
    "OFF_FDT_MAX": ("fdtable", "max_fds"),
    "OFF_FDT_FD": ("fdtable", "fd"),
    "OFF_FILE_PRIV": ("file", "private_data"),
    "OFF_SOCKET_FILE": ("socket", "file"),
    "OFF_SOCKET_SK": ("socket", "sk"),
    "OFF_SK_FAMILY": ("sock_common", "skc_family"),
    "OFF_SK_DADDR": ("sock_common", "skc_daddr"),
    "OFF_SK_RCV_SADDR": ("sock_common", "skc_rcv_saddr"),
    "OFF_SK_DPORT": ("sock_common", "skc_dport"),
    "OFF_SK_NUM": ("sock_common", "skc_num"),
    "OFF_SK_V6_DADDR": ("sock_common", "skc_v6_daddr"),
    "OFF_SK_V6_RCV_SADDR": ("sock_common", "skc_v6_rcv_saddr"),
}


class BtfError(ValueError):
    """The BTF blob is not one this reader understands."""


class Btf:
    """The struct and union layouts of one BTF blob."""

    def __init__(self, data: bytes):
        if len(data) < 24:
            raise BtfError("BTF blob too short")
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != _MAGIC:
            raise BtfError("not BTF (bad magic), or not little-endian")
        type_off, type_len, str_off, _str_len = struct.unpack_from("<IIII", data, 8)
        self._data = data
        self._strings = hdr_len + str_off
        self._pos: list[int] = [0]  # type id -> offset of its record (id 0 is void)
        self._by_name: dict[str, int] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info = struct.unpack_from("<II", data, pos)
            kind, vlen = info >> 24 & 0x1F, info & 0xFFFF
            tid = len(self._pos)
            self._pos.append(pos)
            if kind in (_STRUCT, _UNION) and name_off:
                self._by_name.setdefault(self._name(name_off), tid)
            fixed, per = _EXTRA.get(kind, (0, 0))
            pos += 12 + fixed + per * vlen

    def _name(self, off: int) -> str:
        start = self._strings + off
        return self._data[start:self._data.index(b"\0", start)].decode()

    def _resolve(self, tid: int) -> int:
        for _ in range(32):
            _name_off, info, ref = struct.unpack_from("<III", self._data, self._pos[tid])
            if (info >> 24 & 0x1F) not in _MODIFIERS:
                return tid
            tid = ref
        raise BtfError("type chain too long")

    def _member(self, tid: int, member: str) -> int | None:
        """Byte offset of `member` in struct/union `tid`, looking into anonymous members."""
        pos = self._pos[tid]
        _name_off, info, _size = struct.unpack_from("<III", self._data, pos)
        kind, vlen, kflag = info >> 24 & 0x1F, info & 0xFFFF, info >> 31
        if kind not in (_STRUCT, _UNION):
            return None
        for i in range(vlen):
            name_off, mtype, offset = struct.unpack_from("<III", self._data, pos + 12 + 12 * i)
            bits = offset & 0xFFFFFF if kflag else offset
            if name_off and self._name(name_off) == member:
                return bits // 8
            if not name_off:  # an anonymous struct or union: its members are ours
                inner = self._member(self._resolve(mtype), member)
                if inner is not None:
                    return bits // 8 + inner
        return None

    def offset(self, struct_name: str, member: str) -> int | None:
        """Byte offset of a (possibly nested anonymous) member of a named struct."""
        tid = self._by_name.get(struct_name)
        return None if tid is None else self._member(tid, member)


def socket_offsets(data: bytes) -> dict[str, int] | None:
    """The OFF_* defines of WANTED from this BTF; None when one is missing (the probes
    then fall back to what tracepoints say). IPv6 members may be absent (-1)."""
    btf = Btf(data)
    out: dict[str, int] = {}
    for define, (struct_name, member) in WANTED.items():
        off = btf.offset(struct_name, member)
        if off is None:
            if "_V6_" in define:
                out[define] = -1
                continue
            return None
        out[define] = off
    return out


@lru_cache(maxsize=1)
def running_kernel_offsets(path: str = VMLINUX) -> dict[str, int] | None:
    """socket_offsets() of the running kernel (read once); None without its BTF."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        return socket_offsets(data)
    except (OSError, BtfError, struct.error, ValueError):
        return None
