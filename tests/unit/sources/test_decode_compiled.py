"""The generated per-syscall decoders build exactly the dict that walking the decode plan
builds (same keys, same order, same values and types), for every syscall the probes
report and records of every shape: signed and unsigned returns, arguments at their
extremes, paths cut at the cap, argv, socket addresses, a record cut after its path."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enforcer.sources import decode as d
from enforcer.sources import syscalls as sc
from enforcer.sources.probe import ARGV_HALF, PATH_SIZE


def walk_plan(raw: bytes, off: int = 0) -> dict[str, Any]:
    """The decoder as a plain walk over the plan: the behaviour to keep."""
    (ts, tgid, tid, uid, gid, ret, a0, a1, a2, a3, a4, a5, code, nargv, len1, len2,
     argv_len, saddr_len, _ppid, cgroup_id, comm, _lpm) = d.HEADER.unpack_from(raw, off)
    plan = d._PLANS[code]
    if plan.signed_ret:
        ret = d._signed32(ret)
    ev: dict[str, Any] = {
        "_ts_mono": ts, "proc.pid": tgid, "thread.tid": tid, "user.uid": uid,
        "group.gid": gid, "_comm": d._comm_text(comm), "_code": code,
        "_cgroup_id": cgroup_id, "evt.type": plan.name,
        "evt.dir": "<", "evt.rawres": ret, "evt.res": d.errno_text(ret), plan.ret_key: ret,
    }
    values = (a0, a1, a2, a3, a4, a5)
    ints: dict[str, int] = {}
    for slot, tp, key, fmt in plan.ints:
        ints[tp] = values[slot]
        if key is not None:
            ev[key] = fmt(values[slot])
    if plan.open_how:
        ev["evt.arg.flags"] = d.open_flags_text(ints["how"])
    ev["_ints"] = ints
    if code in d._FD_STATE_CODES:
        ev["_slots"] = values
        if code in d._ACCEPT_CODES:
            ev["_local"] = d._LOCAL.unpack_from(raw, off + d._P2) if saddr_len else (0, 0, 0)
    if plan.s1 is not None:
        ev["_s1"] = ev[plan.s1] = d._cstr(raw, off + d._P1, len1, PATH_SIZE)
    if plan.s2 is not None:
        ev["_s2"] = ev[plan.s2] = d._cstr(raw, off + d._P2, len2, PATH_SIZE)
    if plan.argv:
        blob = raw[off + d._AV:off + d._AV + min(argv_len, 2 * ARGV_HALF)]
        ev["_argv"] = [p.decode(errors="surrogateescape") for p in blob.split(b"\0")[:nargv]]
    if saddr_len:
        ev["_sockaddr"] = d.parse_sockaddr(raw[off + d._SA:off + d._SA + saddr_len])
    return ev


INTS = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(0, 70000),
                 st.sampled_from([0, 1, -100, 2**32 - 100, -1, 0o2000101, 0o20200000, 7]))
PATHS = st.one_of(st.just(""), st.text(max_size=20),
                  st.just("/etc/" + "x" * (PATH_SIZE + 10)))
SADDRS = st.sampled_from([
    b"", b"\x02\x00\x1f\x90\x7f\x00\x00\x01", b"\x01\x00/run/sock\x00",
    b"\x0a\x00\x00\x50" + bytes(4) + bytes(10) + b"\xff\xff\x0a\x00\x00\x01" + bytes(4),
    b"\x10\x00", b"\x02"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(d._PLANS)), st.integers(-(2**31), 2**32 - 1),
       st.lists(INTS, min_size=6, max_size=6), PATHS, PATHS,
       st.lists(st.text(max_size=8), max_size=4), SADDRS, st.text(max_size=16),
       st.booleans(), st.integers(0, 3))
def test_generated_decoders_match_the_plan_walk(code, ret, ints, p1, p2, argv, saddr, comm,
                                               cut, pad) -> None:
    raw = d.pack(code=code, tgid=4242, tid=4243, uid=1000, gid=1000, ret=ret,
                 ints=tuple(ints), comm=comm, path1=p1, path2=p2, argv=tuple(argv),
                 saddr=saddr, ts=123, cgroup_id=77)
    if cut and not p2 and not argv and not saddr:  # cut after its path, as the kernel does
        raw = raw[:d._P1 + len(p1.encode()) + 1]
    raw = bytes(8 * pad) + raw  # a record inside a batch
    got, want = d.decode(raw, 8 * pad), walk_plan(raw, 8 * pad)
    assert list(got.items()) == list(want.items())
    assert [type(v) for v in got.values()] == [type(v) for v in want.values()]


def test_every_syscall_has_a_generated_decoder() -> None:
    assert set(d._DECODERS) == set(sc.BY_CODE)


def test_lifecycle_records_keep_their_shape() -> None:
    fork = d.decode(d.pack(code=sc.EV_FORK, tgid=10, ints=(11, 12), comm="sh"))
    assert fork["evt.type"] == "fork" and fork["_child"] == 11 and fork["_parent_tid"] == 12
    assert d.decode(d.pack(code=sc.EV_EXIT, tgid=10))["evt.type"] == "procexit"
    assert d.decode(d.pack(code=60000, tgid=10))["evt.type"] == "unknown(60000)"
