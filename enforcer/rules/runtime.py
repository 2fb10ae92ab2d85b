"""Helpers that generated rule code calls for the operators Python has no one-liner for:
glob, pmatch, IP/CIDR, byte buffers, transformers, ancestor "any" matching."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from functools import lru_cache
from typing import Any


def glob_regex(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """Shell-style wildcards over the whole string (`*` also crosses `/`, like fnmatch)."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "^") else i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


class PathMatcher:
    """`pmatch`: the path equals or lies under one of the prefixes, component-wise;
    components of a prefix may use glob wildcards."""

    def __init__(self, prefixes: list[str]):
        self.exact: set[str] = set()
        self.wild: list[list[re.Pattern[str]]] = []
        for p in prefixes:
            norm = p.rstrip("/") or "/"
            if any(ch in norm for ch in "*?["):
                self.wild.append([glob_regex(part) for part in norm.split("/")])
            else:
                self.exact.add(norm)

    def __call__(self, path: Any) -> bool:
        if not isinstance(path, str):
            return False
        exact = self.exact
        if path in exact or "/" in exact and path.startswith("/"):
            return True
        i = path.find("/", 1)
        while i > 0:
            if path[:i] in exact:
                return True
            i = path.find("/", i + 1)
        if self.wild:
            parts = path.split("/")
            for pats in self.wild:
                if len(parts) >= len(pats) and all(
                        pat.fullmatch(part) for pat, part in zip(pats, parts, strict=False)):
                    return True
        return False


@lru_cache(maxsize=4096)
def _ip(text: str):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def ip(value: Any):
    """An event's IP value as an address object, or None."""
    if value is None:
        return None
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    return _ip(str(value))


def in_nets(value: Any, nets) -> bool:
    addr = ip(value)
    return addr is not None and any(addr.version == n.version and addr in n for n in nets)


def as_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return str(value).encode("latin-1", "replace")


def t_tolower(v):
    return None if v is None else str(v).lower()


def t_toupper(v):
    return None if v is None else str(v).upper()


def t_basename(v):
    if v is None:
        return None
    s = str(v)
    return s.rsplit("/", 1)[-1]


def t_b64(v):
    if v is None:
        return None
    try:
        raw = base64.b64decode(as_bytes(v), validate=False)
    except (binascii.Error, ValueError):
        return None
    return raw.decode("utf-8", "surrogateescape")


def t_len(v):
    if v is None:
        return None
    return len(v)


def any_of(values: Any, pred) -> bool:
    """Ancestor fields without an index: true when some ancestor satisfies `pred`."""
    if values is None:
        return False
    if not isinstance(values, list | tuple):
        return pred(values)
    return any(pred(v) for v in values if v is not None)


def all_in(values: Any, allowed) -> bool:
    """List-valued field `in`: every value in the set."""
    if not isinstance(values, list | tuple | set | frozenset):
        return values in allowed
    return all(v in allowed for v in values)


def any_in(values: Any, allowed) -> bool:
    """List-valued field `intersects`: some value in the set."""
    if not isinstance(values, list | tuple | set | frozenset):
        return values in allowed
    return any(v in allowed for v in values)
