"""A tiny tc classifier, assembled here as raw BPF instructions and loaded with the bpf(2)
syscall: drop every packet of a quarantined interface except ARP and an allow-list
(IPv4 CIDRs, and DNS: UDP/TCP port 53 of the named DNS servers only, never port 53 of any
address, which would leave a command channel open to any host). This kernel has no tc
`gact` action, so the verdict comes from a direct-action cls_bpf program; it is small
enough not to need a compiler.

`direction` says which address is the far end: "dst" for packets leaving the pod (seen on
the host-side interface's ingress hook), "src" for packets going to the pod (egress hook).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import struct

SYS_BPF = 321  # x86_64
BPF_PROG_LOAD = 5
BPF_PROG_TYPE_SCHED_CLS = 3
TC_ACT_OK = 0
TC_ACT_SHOT = 2
ETH_HLEN = 14

# opcodes
_ALU64_MOV_X = 0xBF
_ALU_MOV_X = 0xBC
_ALU_AND_K = 0x54
_ALU_LSH_K = 0x64
_ALU64_MOV_K = 0xB7
_LDX_W = 0x61
_LD_ABS_W = 0x20
_LD_ABS_H = 0x28
_LD_ABS_B = 0x30
_LD_IND_H = 0x48
_JMP_JEQ_K = 0x15
_JMP_JNE_K = 0x55
_JMP32_JEQ_K = 0x16
_JMP_JA = 0x05
_EXIT = 0x95

_SKB_PROTOCOL = 16  # offsetof(struct __sk_buff, protocol)


class _Asm:
    def __init__(self) -> None:
        self.insns: list[tuple[int, int, int, int | str, int]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, dst: int = 0, src: int = 0, off: int | str = 0,
           imm: int = 0) -> None:
        self.insns.append((code, dst, src, off, imm))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    def bytes(self) -> bytes:
        out = bytearray()
        for index, (code, dst, src, off, imm) in enumerate(self.insns):
            if isinstance(off, str):
                off = self.labels[off] - index - 1
            out += struct.pack("<BBhi", code, (src << 4) | dst, off, _s32(imm))
        return bytes(out)


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def program(direction: str, allowed: list[str], dns_servers: list[str]) -> bytes:
    """The classifier's instructions for one direction: pass ARP, IPv4 packets whose far end
    is in `allowed`, and UDP/TCP packets whose far end is port 53 of one of `dns_servers`
    (IPv4 addresses); drop the rest."""
    addr_off = ETH_HLEN + (16 if direction == "dst" else 12)
    port_off = ETH_HLEN + (2 if direction == "dst" else 0)
    asm = _Asm()
    asm.op(_ALU64_MOV_X, dst=6, src=1)                        # r6 = skb (for LD_ABS)
    asm.op(_LDX_W, dst=2, src=1, off=_SKB_PROTOCOL)           # r2 = skb->protocol (be16)
    asm.op(_JMP_JEQ_K, dst=2, off="pass", imm=0x0608)         # ARP (htons 0x0806)
    asm.op(_JMP_JNE_K, dst=2, off="drop", imm=0x0008)         # not IPv4 (htons 0x0800)
    asm.op(_LD_ABS_W, imm=addr_off)                           # r0 = far-end address
    for cidr in allowed:
        net = ipaddress.ip_network(cidr, strict=False)
        if net.version != 4:
            continue
        asm.op(_ALU_MOV_X, dst=1, src=0)                      # w1 = w0
        asm.op(_ALU_AND_K, dst=1, imm=int(net.netmask))       # w1 &= mask
        asm.op(_JMP32_JEQ_K, dst=1, off="pass", imm=int(net.network_address))
    servers = [ipaddress.ip_address(a) for a in dns_servers]
    servers = [a for a in servers if a.version == 4]
    if servers:
        for address in servers:                               # w0 still the far end
            asm.op(_JMP32_JEQ_K, dst=0, off="dns", imm=int(address))
        asm.op(_JMP_JA, off="drop")
        asm.label("dns")
        asm.op(_LD_ABS_B, imm=ETH_HLEN + 9)                   # r0 = IP protocol
        asm.op(_JMP_JEQ_K, dst=0, off="l4", imm=17)
        asm.op(_JMP_JNE_K, dst=0, off="drop", imm=6)
        asm.label("l4")
        asm.op(_LD_ABS_B, imm=ETH_HLEN)                       # r0 = version/IHL
        asm.op(_ALU_AND_K, dst=0, imm=0x0F)
        asm.op(_ALU_LSH_K, dst=0, imm=2)                      # header length in bytes
        asm.op(_ALU_MOV_X, dst=7, src=0)
        asm.op(_LD_IND_H, src=7, imm=port_off)                # r0 = far-end port
        asm.op(_JMP_JEQ_K, dst=0, off="pass", imm=53)
    asm.label("drop")
    asm.op(_ALU64_MOV_K, dst=0, imm=TC_ACT_SHOT)
    asm.op(_EXIT)
    asm.label("pass")
    asm.op(_ALU64_MOV_K, dst=0, imm=TC_ACT_OK)
    asm.op(_EXIT)
    return asm.bytes()


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16)]


def load(code: bytes, name: str) -> int:
    """Load a SCHED_CLS program; returns its fd. Raises OSError with the verifier log."""
    libc = ctypes.CDLL(None, use_errno=True)
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(65536)
    attr = _ProgLoadAttr(prog_type=BPF_PROG_TYPE_SCHED_CLS, insn_cnt=len(code) // 8,
                         insns=ctypes.addressof(insns), license=ctypes.addressof(license_),
                         log_level=1, log_size=len(log), log_buf=ctypes.addressof(log),
                         prog_name=name.encode()[:15])
    fd = libc.syscall(SYS_BPF, BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{os.strerror(err)}: {log.value.decode(errors='replace')[-500:]}")
    return fd
