"""The in-kernel kill on connects: residues on the connect's own fields (remote port and
address from its sockaddr, family, result), what is refused and why (upstream rules
included), and a differential check against the engine: for every process, sockaddr and
result tried, the kernel model kills only when the engine matches, and always when the
engine matches a connect to an IPv4 or IPv6 address."""

from __future__ import annotations

import errno
import ipaddress
import itertools
import socket
from pathlib import Path

import pytest

from enforcer.kernel import residue as pe
from enforcer.kernel.kill_tables import TYPE_BITS, KillTables, addr_key
from enforcer.rules.engine import Engine
from enforcer.rules.loader import load_rules
from enforcer.sources.decode import parse_sockaddr
from enforcer.syscall_result import errno_text
from tests.unit.rules.helpers import load, rule_yaml

DATA = Path(__file__).resolve().parents[2] / "data" / "falco-rules"
POLICY_RULE = ("evt.type = connect and evt.dir = < and fd.sport = 4444 "
               "and proc.name = python3")
OUTBOUND_4444 = (
    "evt.type = connect and evt.dir = < and (fd.typechar = 4 or fd.typechar = 6) and "
    '(fd.ip != "0.0.0.0" and fd.net != "127.0.0.0/8" and not fd.snet in '
    '("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")) and '
    "(evt.rawres >= 0 or evt.res = EINPROGRESS) and fd.sport in (4444, 1337) "
    "and proc.name = python3")


class Ev(dict):
    def get(self, key, default=None):
        value = dict.get(self, key)
        return default if value is None else value


def one(condition: str):
    return next(iter(load(rule_yaml(condition)).rules.values()))


def python3(**over):
    fields = {"proc.name": "python3", "proc.pname": "bash", "user.name": "root",
              "proc.cmdline": "python3 x.py", "container.id": "host"}
    fields.update(over)
    return Ev(fields)


def residue_of(rule, fields):
    return pe.conjuncts(pe.partial(rule.expr, pe.process_decider(fields)), rule.event_types)


def test_policy_rule_residue_is_the_port_on_ip_connects():
    rule = one(POLICY_RULE)
    assert pe.rule_eligibility(rule) is None
    residue = pe.partial(rule.expr, pe.process_decider(python3()))
    assert str(residue) == "(evt.type = connect and evt.dir = < and fd.sport = 4444)"
    (conj,) = pe.conjuncts(residue, rule.event_types)
    assert conj.types == frozenset({"connect"})
    assert conj.classes == pe.INET  # a port only exists for IPv4 and IPv6 connects
    # evt.dir = < is true of every connect the engine sees (judged at its exit)
    assert conj.ports_all == frozenset({((4444, 4444),)})
    assert not conj.needs_result  # the rule does not read the result: killed at entry
    assert residue_of(rule, python3(**{"proc.name": "curl"})) == ()


def test_outbound_residue_waits_for_the_result():
    rule = one(OUTBOUND_4444)
    assert pe.rule_eligibility(rule) is None
    conj = residue_of(rule, python3())
    assert conj and all(c.needs_result for c in conj)  # decided at sys_exit_connect
    want = pe.R_ZERO | pe.R_POS | pe.errno_bit(errno.EINPROGRESS)
    assert {c.results for c in conj} == {want}
    assert all(c.addrs_none for c in conj)


@pytest.mark.parametrize(("condition", "reason"), [
    ("evt.type = connect and fd.l4proto = tcp", "protocol is the socket's"),
    ("evt.type = connect and fd.lport = 4444", "local end"),
    ("evt.type = connect and fd.cip = 127.0.0.1", "local end"),
    ("evt.type = connect and fd.name = 127.0.0.1:22", "local end"),
    ("evt.type = connect and fd.connected = false", "socket's state"),
    ("evt.type = connect and fd.sip.name = example.com", "DNS"),
    ("evt.type = connect and fd.num = 3", "descriptor number"),
    ("evt.type = connect and evt.rawres = 5", "which positive value"),
    ("evt.type = connect and evt.res = EXDEV", "which errno"),
    ("evt.type = connect and evt.res startswith E", "only compares evt.res"),
    ("evt.type = recvfrom and fd.sport = 53", "this rule matches recvfrom"),
    ("evt.type = sendto and fd.connected = false and fd.sport = 53", "socket's state"),
    ("evt.type in (connect, accept) and fd.sport = 53", "this rule matches accept"),
    ("evt.type in (connect, openat) and fd.name = /etc/shadow", "local end"),
])
def test_ineligible_connect_rules_say_why(condition, reason):
    assert reason in (pe.rule_eligibility(one(condition)) or "")


def test_each_syscall_keeps_only_its_own_branch():
    rule = one("(evt.type = openat and fd.name = /etc/shadow) or "
               "(evt.type = connect and fd.sport = 4444 and evt.rawres >= 0)")
    assert pe.rule_eligibility(rule) is None
    connects, opens = sorted(residue_of(rule, python3()), key=lambda c: sorted(c.types))
    assert opens.types == {"openat"} and opens.paths_all and not opens.uses_net
    assert connects.types == {"connect"} and connects.ports_all and not connects.uses_path
    assert connects.results == pe.OK


def test_upstream_connect_rules(tmp_path):
    rules = load_rules([str(DATA / "falco_rules.yaml"),
                        str(DATA / "falco-incubating_rules.yaml")]).rules
    reasons = {name: pe.rule_eligibility(rules[name]) for name in (
        "Contact K8S API Server From Container", "Disallowed SSH Connection Non Standard Port",
        "Unexpected UDP Traffic", "Contact EC2 Instance Metadata Service From Container")}
    assert "a domain name needs a DNS lookup" in reasons["Contact K8S API Server From Container"]
    # the SSH rule reads the protocol, and the outbound macro too for sendto and sendmsg
    assert "`fd.l4proto = tcp` cannot be checked exactly" in reasons[
        "Disallowed SSH Connection Non Standard Port"]
    assert "`fd.l4proto != tcp` cannot be checked exactly" in reasons[
        "Contact EC2 Instance Metadata Service From Container"]
    assert all("the protocol is the socket's" in reasons[name] for name in (
        "Disallowed SSH Connection Non Standard Port",
        "Contact EC2 Instance Metadata Service From Container"))
    assert "matches accept, accept4, listen" in reasons["Unexpected UDP Traffic"]
    # the same rule written for connects only, without the protocol, is eligible
    text = (DATA / "falco_rules.yaml").read_text()
    local = tmp_path / "ssh_connect.yaml"
    local.write_text(
        "- rule: Disallowed SSH Connection Non Standard Port\n"
        "  condition: >\n"
        "    evt.type = connect and (fd.typechar = 4 or fd.typechar = 6) and\n"
        "    (fd.ip != \"0.0.0.0\" and fd.net != \"127.0.0.0/8\" and\n"
        "     not fd.snet in (rfc_1918_addresses)) and\n"
        "    (evt.rawres >= 0 or evt.res = EINPROGRESS) and proc.exe endswith ssh and\n"
        "    ssh_non_standard_ports_network\n"
        "  override: {condition: replace}\n")
    assert "ssh_non_standard_ports" in text
    rule = load_rules([str(DATA / "falco_rules.yaml"), str(local)]).rules[
        "Disallowed SSH Connection Non Standard Port"]
    assert pe.rule_eligibility(rule) is None
    (conj,) = residue_of(rule, python3(**{"proc.exe": "/usr/bin/ssh", "proc.name": "ssh"}))
    assert conj.ports_all == frozenset({((53, 53), (80, 80), (88, 88), (443, 443),
                                         (4444, 4444), (8080, 8080), (8443, 8443))})
    assert residue_of(rule, python3(**{"proc.exe": "/usr/bin/scp"})) == ()


# --- differential: the kernel model against the engine ------------------------------------
def sockaddr(family: int, host: str = "", port: int = 0, path: str = "") -> bytes:
    if family == socket.AF_INET:
        return (family.to_bytes(2, "little") + port.to_bytes(2, "big")
                + ipaddress.IPv4Address(host).packed + bytes(8))
    if family == socket.AF_INET6:
        return (family.to_bytes(2, "little") + port.to_bytes(2, "big") + bytes(4)
                + ipaddress.IPv6Address(host).packed + bytes(4))
    if family == socket.AF_UNIX:
        return family.to_bytes(2, "little") + path.encode() + b"\0"
    return family.to_bytes(2, "little") + bytes(14)


ADDRS = [sockaddr(socket.AF_INET, h, p) for h in ("127.0.0.1", "10.1.2.3", "8.8.8.8",
                                                   "0.0.0.0", "192.168.1.1")
         for p in (22, 1337, 4444, 443, 1023)]
ADDRS += [sockaddr(socket.AF_INET6, h, p) for h in ("::1", "::ffff:127.0.0.1",
                                                     "::ffff:8.8.8.8", "2001:db8::1", "::")
          for p in (4444, 80, 1024)]
ADDRS += [sockaddr(socket.AF_UNIX, path="/run/x.sock"), sockaddr(socket.AF_NETLINK),
          sockaddr(socket.AF_INET, "8.8.8.8", 4444)[:6],  # too short: not an IPv4 address
          sockaddr(socket.AF_INET6, "::1", 4444)[:20], b"\x02", b""]
RESULTS = [0, -errno.EINPROGRESS, -errno.ECONNREFUSED, -errno.EXDEV, -512, 7]
# what userspace reads from /proc when the sockaddr does not name an IP address
PROC_VIEWS = [{}, {"ip": "127.0.0.1", "port": 4444, "typechar": "4"},
              {"ip": "8.8.8.8", "port": 22, "typechar": "6"}]


def net_class(raw: bytes) -> tuple[int, int, tuple[int, bytes] | None]:
    """bpf/enforce.c's net_class(): (class, port, address key) of a sockaddr."""
    if len(raw) < 2:
        return 31, 0, None
    family = raw[0] | raw[1] << 8
    port = raw[2] << 8 | raw[3] if len(raw) >= 4 else 0
    if family == 2 and len(raw) >= 8:
        return pe.F4, port, (40, b"\x04" + raw[4:8])
    if family == 10 and len(raw) >= 24:
        if raw[8:18] == bytes(10) and raw[18:20] == b"\xff\xff":
            return pe.F6M, port, (40, b"\x04" + raw[20:24])
        return pe.F6, port, (136, b"\x06" + raw[8:24])
    return (pe.FUNIX if family == 1 else pe.FOTHER), port, None


def lpm(entries: dict[tuple[int, bytes], int], key: tuple[int, bytes]) -> int:
    bits = {(plen, k): v for (plen, k), v in entries.items()}
    best, found = -1, 0
    for (plen, k), v in bits.items():
        nbits = plen
        a = int.from_bytes(k.ljust(17, b"\0"), "big") >> (17 * 8 - nbits)
        b = int.from_bytes(key[1].ljust(17, b"\0"), "big") >> (17 * 8 - nbits)
        if nbits <= key[0] and a == b and nbits > best:
            best, found = nbits, v
    return found


def kernel_kills(tables: KillTables, bitmap: int, etype: str, raw: bytes, ret: int) -> bool:
    """bpf/enforce.c's judge() for a connect, sendto or sendmsg, in Python (entry, then
    exit)."""
    cls, port, key = net_class(raw)
    portbits = tables.port_bits().get(port, 0) if cls <= 2 else 0
    addrbits = lpm(tables.addr_entries(), key) if cls <= 2 and key else 0
    for i, row in enumerate(tables.rows):
        if not bitmap >> i & 1 or not row.types & TYPE_BITS[etype]:
            continue
        if not row.classes >> cls & 1 or not row.results & pe.result_bit(ret):
            continue
        if row.uses_net:
            if cls > 2:
                continue
            if portbits & row.ports_all != row.ports_all or portbits & row.ports_none:
                continue
            if addrbits & row.addrs_all != row.addrs_all or addrbits & row.addrs_none:
                continue
        return True
    return False


def engine_events(fields: Ev, etype: str, raw: bytes, ret: int) -> list[Ev]:
    """The event userspace builds for this connect (enforcer.state.live_event), once per
    possible /proc answer when the sockaddr does not name an IP address."""
    sa = parse_sockaddr(raw) if raw else None
    out = []
    for view in PROC_VIEWS if not (sa and "ip" in sa) else [None]:
        ev = Ev(fields)
        ev.update({"evt.type": etype, "evt.dir": "<", "evt.num": 7, "evt.rawres": ret,
                   "evt.res": errno_text(ret)})
        if view is None:
            ip, port = sa["ip"], sa["port"]
            family = sa["family"]
        else:
            ip, port = view.get("ip"), view.get("port")
            family = sa["family"] if sa else {"4": "ipv4", "6": "ipv6"}.get(
                view.get("typechar", ""))
        tc = {"ipv4": "4", "ipv6": "6", "unix": "u"}.get(family)
        ev.update({"fd.typechar": tc, "fd.type": family if tc else None,
                   "fd.sockfamily": {"4": "ip", "6": "ip", "u": "unix"}.get(tc)})
        for k in ("fd.sip", "fd.rip", "fd.ip", "fd.net", "fd.snet", "fd.rnet"):
            ev[k] = ip
        for k in ("fd.sport", "fd.rport", "fd.port"):
            ev[k] = port
        out.append(ev)
    return out


CONDITIONS = [
    POLICY_RULE,
    OUTBOUND_4444,
    "evt.type = connect and fd.rport < 1024 and not fd.rip in (::1, 127.0.0.1) "
    "and proc.name = python3",
    "evt.type = connect and fd.sockfamily = unix and proc.name = python3",
    "evt.type = connect and not fd.typechar = 4 and evt.rawres < 0",
    "evt.type = connect and fd.typechar != 4 and evt.res != ECONNREFUSED",
    "evt.type = connect and (fd.net = 127.0.0.0/8 or fd.net = ::/0) and "
    "not fd.port in (4444, 80)",
    "evt.type = connect and fd.sip = ::ffff:127.0.0.1",
    "evt.type = connect and fd.snet in (8.0.0.0/8, 2001:db8::/32) and fd.sport > 100",
    "evt.type in (sendto, sendmsg) and fd.sport = 4444 and evt.rawres > 0",
    "evt.type in (connect, sendto) and fd.rnet = 127.0.0.0/8 and (evt.type = sendto or "
    "evt.res = SUCCESS) and proc.name = python3",
    "(evt.type = openat and fd.name startswith /etc/ and fd.num >= 0) or "
    "(evt.type = connect and fd.sport = 4444 and evt.rawres >= 0)",
]


@pytest.mark.parametrize("condition", CONDITIONS)
def test_kernel_model_agrees_with_the_engine(condition):
    rs = load(rule_yaml(condition, name="r"))
    rule = rs.rules["r"]
    # every condition here is one the kernel can check; refused shapes, with their
    # reasons, belong in the refusal table above
    assert pe.rule_eligibility(rule) is None, pe.rule_eligibility(rule)
    engine = Engine(rs, hostname="t")
    tables = KillTables([rule.name])
    kills = 0
    for fields in (python3(), python3(**{"proc.name": "curl"})):
        bitmap = 0
        for c in residue_of(rule, fields):
            bitmap |= 1 << tables.slot(0, c)[0]
        for etype, raw, ret in itertools.product(("connect", "sendto", "sendmsg"), ADDRS,
                                                 RESULTS):
            events = engine_events(fields, etype, raw, ret)
            matched = [any(a.rule == "r" for a in engine.evaluate(ev)) for ev in events]
            killed = kernel_kills(tables, bitmap, etype, raw, ret)
            kills += killed
            where = (fields["proc.name"], etype, raw.hex(), ret)
            assert not killed or all(matched), f"false kill {where}"
            if net_class(raw)[0] <= 2:
                assert killed == matched[0], f"missed {where}"
    assert kills > 0 or "ffff" in condition


def test_address_keys_and_entries():
    tables = KillTables(["r"])
    loop = frozenset({"127.0.0.0/8"})
    one_addr = frozenset({"127.0.0.1/32", "::1/128"})
    tables.slot(0, pe.Conjunct(frozenset({"connect"}), pe.INET, pe.BOTH,
                               addrs_all=frozenset({loop}), addrs_none=frozenset({one_addr})))
    entries = tables.addr_entries()
    a, b = 1 << tables.addr_sets[loop], 1 << tables.addr_sets[one_addr]
    assert entries[addr_key("127.0.0.0/8")] == a
    assert entries[addr_key("127.0.0.1/32")] == a | b  # the longest match answers alone
    assert entries[addr_key("::1/128")] == b
    assert addr_key("::1/128") == (136, b"\x06" + bytes(15) + b"\x01")


def test_only_the_matched_syscalls_are_attached():
    from enforcer.kernel.kill_tables import render

    text = render(1234, types={"connect", "openat"})
    assert "#define WANT_CONNECT 1" in text and "#define WANT_OPENAT 1" in text
    assert "#define WANT_SENDTO 0" in text and "#define WANT_OPEN 0" in text
    assert "#if WANT_SENDMSG\nstruct msghdr_head_t" in text
    assert "case 115: return" in text  # EINPROGRESS has its own result bit
