"""Validation of names and addresses taken from events before any API or netlink call uses
them: event fields are data from a possibly hostile workload."""

from __future__ import annotations

import ipaddress
import re

from actions.base import Refused

# RFC 1123 labels / subdomains, as Kubernetes validates names.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def valid_namespace(name: object) -> str:
    """A namespace name as Kubernetes validates it (RFC 1123 label). Raises Refused."""
    if not isinstance(name, str) or not _DNS_LABEL.match(name):
        raise Refused("invalid-name", f"{name!r} is not a valid namespace name")
    return name


def valid_object_name(name: object) -> str:
    """A pod/node/object name (RFC 1123 subdomain). Raises Refused."""
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name):
        raise Refused("invalid-name", f"{name!r} is not a valid Kubernetes object name")
    return name


def valid_ip(value: object) -> str:
    """An IPv4/IPv6 address. Raises Refused."""
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise Refused("invalid-ip", f"{value!r} is not an IP address") from None

