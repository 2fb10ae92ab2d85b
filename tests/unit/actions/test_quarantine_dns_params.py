"""Which DNS servers a quarantined pod may still ask: the policy's, else the IPv4
nameservers of the resolver configuration, loopback ones left out."""

from __future__ import annotations

import pytest

from actions.base import ParamError
from actions.quarantine import QuarantineParams, nameservers


def test_nameservers_of_a_resolv_conf() -> None:
    text = ("# generated\nsearch default.svc.cluster.local svc.cluster.local\n"
            "nameserver 127.0.0.53\nnameserver 10.96.0.10\nnameserver fd00::a\n"
            "nameserver 169.254.20.10\nnameserver 10.96.0.10\nnameserver\noptions ndots:5\n")
    assert nameservers(text) == ["10.96.0.10", "169.254.20.10"]


@pytest.mark.parametrize("raw,message", [
    ({"dns_servers": ["10.96.0.300"]}, "dns_servers"),
    ({"dns_servers": "10.96.0.10"}, "expected a list of IPv4 addresses"),
    ({"dns_servers": ["fd00::a"]}, "an IPv4 address"),
    ({"resolv_conf": "etc/resolv.conf"}, "absolute path"),
])
def test_bad_dns_parameters(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ParamError, match=message):
        QuarantineParams.from_mapping(raw)


def test_good_dns_parameters() -> None:
    params = QuarantineParams.from_mapping({"dns_servers": ["10.96.0.10"]})
    assert params.dns_servers == ("10.96.0.10",)
    assert QuarantineParams.from_mapping({}).resolv_conf == "/etc/resolv.conf"
