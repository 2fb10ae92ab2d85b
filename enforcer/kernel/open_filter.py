"""The in-kernel open filter, derived from the loaded rules.

Opens are by far the most frequent events the rules ask for, and most rules about opens
only care about a few paths (`/etc/shadow`, below `/etc`, `/root/.ssh`...). For every
enabled rule that can match an open, the expanded condition is over-approximated, for an
open event, by a set of (absolute path prefix, open kinds) pairs: the event can only match
if its path starts with one of the prefixes and its kind (read/write) is among the kinds.
Open kinds are 16 classes (readable, writable, O_TRUNC, O_CREAT; see open_class() in
bpf/events.c), so `open_write and evt.arg.flags contains O_TRUNC` keeps only truncating
writes. The union over all such rules is loaded into the probe's LPM trie; the kernel drops every
other open with an absolute, already-normal path. The trie answers with the longest
matching entry only, so each entry carries the classes of the shorter entries that are its
prefixes (closed_under_prefixes); kernel_passes() models the kernel's check. Relative
paths and paths containing `/.`, `//` or `..` always reach userspace (only it can resolve
them), so conditions that need such a raw path (`fd.nameraw contains "../"`) need no
entry in the trie.

Soundness over precision: anything not understood (negations, `contains`, `endswith`,
regexes, transformers, fields other than fd.name/fd.directory/fd.filename/evt.is_open_*/
evt.arg.flags) widens to "any path, any class", and a single such rule turns the filter
off. `fd.name endswith X` and `fd.filename in (...)` become suffixes, checked after the
trie (at most MAX_SUFFIXES; more widen to "any path" for their classes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from enforcer.sources.probe import (
    ALL_CLASSES,
    CREATING,
    LPM_DATA,
    MAX_SUFFIXES,
    READABLE,
    SUFFIX_LEN,
    TRUNCATING,
    WRITABLE,
    lpm_key,
    second_bytes,
)

OPEN_TYPES = frozenset({"open", "openat", "openat2", "creat"})
ALL = ALL_CLASSES
# evt.arg.flags contains X -> the open classes whose flags render with X
_FLAG_CLASSES = {"O_TRUNC": TRUNCATING, "O_CREAT": CREATING,
                 "O_RDWR": READABLE & WRITABLE, "O_WRONLY": WRITABLE & ~READABLE,
                 "O_RDONLY": READABLE & ~WRITABLE}

# (path prefix, path suffix, classes): the open can match only if its path starts with
# the prefix AND ends with the suffix AND its class is in the set ("" = no constraint)
Constraint = frozenset[tuple[str, str, int]]
TOP: Constraint = frozenset({("", "", ALL)})
EMPTY: Constraint = frozenset()
_MAX_PRODUCT = 20000


@dataclass(frozen=True)
class OpenFilter:
    """What the probe's open filter is loaded with."""

    prefixes: dict[str, int]  # exact paths end with NUL
    suffixes: dict[str, int]


def open_filter_for(rules: Iterable[Any]) -> OpenFilter | None:
    """The kernel's open filter for these rules, or None when it cannot drop anything."""
    from enforcer.rules import nodes  # noqa: PLC0415 - only the agent needs the rules here

    total: Constraint = EMPTY
    any_rule = False
    for rule in rules:
        if not getattr(rule, "enabled", True):
            continue
        types = getattr(rule, "event_types", None)
        if types is not None and not (set(types) & OPEN_TYPES):
            continue
        any_rule = True
        total = _union(total, _approx(rule.expr, nodes))
        if ("", "", ALL) in total:
            return None
    if not any_rule:
        return OpenFilter({}, {})  # no rule looks at opens: drop every absolute one
    prefixes: dict[str, int] = {}
    suffixes: dict[str, int] = {}
    for prefix, suffix, mask in total:
        if suffix and prefix and prefix.endswith("\0"):
            suffix = ""  # an exact path already says everything
        if suffix:
            # the kernel checks suffixes alone: dropping the prefix only widens the set
            suffixes[suffix] = suffixes.get(suffix, 0) | mask
        else:
            prefixes[prefix] = prefixes.get(prefix, 0) | mask
    if len(suffixes) > MAX_SUFFIXES or any(len(x.encode()) > SUFFIX_LEN for x in suffixes):
        for mask in suffixes.values():  # too many to check: every path of the class
            prefixes[""] = prefixes.get("", 0) | mask
        suffixes = {}
    prefixes = closed_under_prefixes(prefixes)
    if prefixes.get("", 0) == ALL:
        return None
    return OpenFilter(prefixes, suffixes)


def closed_under_prefixes(prefixes: dict[str, int]) -> dict[str, int]:
    """Each entry's classes joined with those of every shorter entry that is a prefix of it.

    The kernel's LPM trie answers with the longest matching entry only, so an entry must
    carry the classes of every entry it shadows: with `/etc/` for writes and "" (any path)
    for reads, a read of /etc/passwd finds `/etc/` and would be dropped otherwise. (Suffixes
    need no such step: the kernel tries every one of them.)"""
    out = {}
    for key, mask in prefixes.items():
        for shorter, more in prefixes.items():
            if len(shorter) < len(key) and key.startswith(shorter):
                mask |= more
        out[key] = mask
    return out


def _approx(expr: Any, nodes: Any) -> Constraint:
    """Over-approximation of `expr` on open events (recursive; rule ASTs are shallow)."""
    if isinstance(expr, nodes.Macro):
        return _approx(expr.expr, nodes)
    if isinstance(expr, nodes.And):
        acc = TOP
        for child in expr.children:
            acc = _intersect(acc, _approx(child, nodes))
            if not acc:
                return EMPTY
        return acc
    if isinstance(expr, nodes.Or):
        acc = EMPTY
        for child in expr.children:
            acc = _union(acc, _approx(child, nodes))
        return acc
    if isinstance(expr, nodes.Not):
        return _negated(expr.child, nodes)
    if isinstance(expr, nodes.Check):
        return _check(expr, nodes)
    return TOP


def _negated(child: Any, nodes: Any) -> Constraint:
    while isinstance(child, nodes.Macro):
        child = child.expr
    if isinstance(child, nodes.Not):
        return _approx(child.child, nodes)
    if isinstance(child, nodes.Check):
        admitted = _evt_types(child, nodes)
        if admitted is not None:
            return EMPTY if not (OPEN_TYPES - admitted) else TOP
    return TOP


def _evt_types(check: Any, nodes: Any) -> frozenset[str] | None:
    """The open types an evt.type check admits; None if it is not such a check."""
    left = check.left
    if not (isinstance(left, nodes.Field) and left.name == "evt.type" and left.arg is None):
        return None
    if check.op in ("=", "==") and isinstance(check.right, nodes.Value):
        return frozenset({check.right.text}) & OPEN_TYPES
    if check.op == "!=" and isinstance(check.right, nodes.Value):
        return OPEN_TYPES - {check.right.text}
    if check.op in ("in", "intersects") and isinstance(check.right, nodes.ValueList):
        return frozenset(v.text for v in check.right.items) & OPEN_TYPES
    return OPEN_TYPES


def _values(check: Any, nodes: Any) -> list[str] | None:
    if isinstance(check.right, nodes.Value):
        return [check.right.text]
    if isinstance(check.right, nodes.ValueList):
        return [v.text for v in check.right.items]
    return None


def _check(check: Any, nodes: Any) -> Constraint:
    admitted = _evt_types(check, nodes)
    if admitted is not None:
        return TOP if admitted else EMPTY
    left = check.left
    if not isinstance(left, nodes.Field) or left.arg is not None:
        return TOP
    op = check.op
    values = _values(check, nodes)
    if left.name in ("evt.is_open_read", "evt.is_open_write"):
        if op in ("=", "==") and values and values[0].lower() == "true":
            return frozenset({("", "", READABLE if left.name.endswith("read") else WRITABLE)})
        return TOP
    if left.name == "evt.arg.flags" and op == "contains" and isinstance(check.right, nodes.Value):
        cls = _FLAG_CLASSES.get(check.right.text)
        return frozenset({("", "", cls)}) if cls else TOP
    if (left.name == "fd.nameraw" and op in ("contains", "glob", "startswith", "endswith")
            and values and all(".." in v for v in values)):
        return EMPTY  # the kernel passes every raw path containing `..` unconditionally
    if values is None:
        return TOP
    if left.name == "fd.filename" and op in ("=", "==", "in") and all(
            v and "/" not in v for v in values):
        return frozenset(("", "/" + v, ALL) for v in values)
    if left.name == "fd.name" and op == "endswith" and all(values):
        return frozenset(("", v, ALL) for v in values)
    if not all(v.startswith("/") for v in values):
        return TOP
    if left.name == "fd.name":
        if op in ("=", "==", "in"):
            return frozenset((v + "\0", "", ALL) for v in values)
        if op in ("startswith", "pmatch"):
            return frozenset((v, "", ALL) for v in values)
        if op == "glob":
            return frozenset((_glob_prefix(v), "", ALL) for v in values)
        return TOP
    if left.name == "fd.directory":
        if op in ("=", "==", "in"):
            return frozenset((v.rstrip("/") + "/", "", ALL) for v in values)
        if op in ("startswith", "pmatch"):
            return frozenset((v, "", ALL) for v in values)
        return TOP
    return TOP


def _glob_prefix(pattern: str) -> str:
    for i, ch in enumerate(pattern):
        if ch in "*?[\\":
            return pattern[:i]
    return pattern + "\0"


def _intersect(a: Constraint, b: Constraint) -> Constraint:
    if a == TOP:
        return b
    if b == TOP:
        return a
    if len(a) * len(b) > _MAX_PRODUCT:
        return a if len(a) <= len(b) else b  # a superset of the intersection: still sound
    out = set()
    for p1, s1, m1 in a:
        for p2, s2, m2 in b:
            m = m1 & m2
            if not m:
                continue
            if p1.startswith(p2):
                prefix = p1
            elif p2.startswith(p1):
                prefix = p2
            else:
                continue
            if s1.endswith(s2):
                suffix = s1
            elif s2.endswith(s1):
                suffix = s2
            else:
                continue
            out.add((prefix, suffix, m))
    return frozenset(out)


def _union(a: Constraint, b: Constraint) -> Constraint:
    return a | b


SEND_TYPES = frozenset({"sendto", "sendmsg"})


def sends_need_address(rules: Iterable[Any]) -> bool:
    """Whether every enabled rule that can match sendto/sendmsg requires
    `fd.name_changed=true`, i.e. a destination address in the call: then the kernel may
    drop sends without one (most of them: send(2) on connected sockets)."""
    from enforcer.rules import nodes  # noqa: PLC0415

    for rule in rules:
        if not getattr(rule, "enabled", True):
            continue
        types = getattr(rule, "event_types", None)
        if types is not None and not (set(types) & SEND_TYPES):
            continue
        if not _needs_address(rule.expr, nodes):
            return False
    return True


def _needs_address(expr: Any, nodes: Any) -> bool:
    """True when `expr` cannot hold for a send event without an address (conservative)."""
    if isinstance(expr, nodes.Macro):
        return _needs_address(expr.expr, nodes)
    if isinstance(expr, nodes.And):
        return any(_needs_address(c, nodes) for c in expr.children)
    if isinstance(expr, nodes.Or):
        return all(_needs_address(c, nodes) for c in expr.children)
    if isinstance(expr, nodes.Check):
        left = expr.left
        if not isinstance(left, nodes.Field) or left.arg is not None:
            return False
        if left.name == "evt.type":
            admitted = _admitted(expr, nodes, SEND_TYPES)
            return admitted is not None and not admitted
        if left.name == "fd.name_changed" and expr.op in ("=", "==") and isinstance(
                expr.right, nodes.Value):
            return expr.right.text.lower() == "true"
    return False


def _admitted(check: Any, nodes: Any, universe: frozenset[str]) -> frozenset[str] | None:
    if check.op in ("=", "==") and isinstance(check.right, nodes.Value):
        return frozenset({check.right.text}) & universe
    if check.op == "!=" and isinstance(check.right, nodes.Value):
        return universe - {check.right.text}
    if check.op in ("in", "intersects") and isinstance(check.right, nodes.ValueList):
        return frozenset(v.text for v in check.right.items) & universe
    return None


def kernel_passes(filt: OpenFilter | None, raw: str, flags: int) -> bool:
    """Whether the kernel's open filter (open_wanted() in bpf/events.c) lets an open of the
    raw path `raw` with these open flags cross to userspace: a model of the C, step for
    step, kept here so that tests can compare it with what the rules engine matches."""
    if filt is None:
        return True

    path = raw.encode()
    size = len(path) + 1  # e->len1 counts the NUL
    cls = open_class(flags)
    suffix_classes = _joined(filt.suffixes.values())
    prefix_classes = _joined(filt.prefixes.values())
    byte1 = second_bytes(filt.prefixes)
    c1 = path[1] if len(path) > 1 else 0
    if (path[:1] == b"/" and not (suffix_classes >> cls) & 1 and c1 not in b"./\0"
            and size <= LPM_DATA and not (byte1 >> c1) & 1):
        return b".." in path
    relative = path[:1] != b"/"
    if relative and ((prefix_classes >> cls) & 1 or size <= 1):
        return True
    if size > LPM_DATA:
        return True
    if path[:1] == b"." and path[1:2] in (b"/", b""):
        return True
    if (b".." in path or b"//" in path or b"/./" in path or path.endswith((b"/", b"/."))):
        return True
    if not relative and (byte1 >> c1) & 1:
        key = path + b"\0"
        best = -1
        mask = 0
        for prefix, classes in filt.prefixes.items():
            bits, data = lpm_key(prefix)
            n = bits // 8
            if n > best and key[:n] == data[:n]:
                best, mask = n, classes
        if best >= 0 and (mask >> cls) & 1:
            return True
    if not (suffix_classes >> cls) & 1:
        return False
    for suffix, classes in filt.suffixes.items():
        s = suffix.encode()
        if not s or not (classes >> cls) & 1:
            continue
        if path.endswith(s) or (relative and b"/" + path == s):
            return True
    return False


def open_class(flags: int) -> int:
    """The open's class (open_class() in bpf/events.c): bit 0 readable, bit 1 writable,
    bit 2 O_TRUNC, bit 3 O_CREAT."""
    acc = flags & 3
    return ((acc != 1) | (acc != 0) << 1 | bool(flags & 0o1000) << 2
            | bool(flags & 0o100) << 3)


def _joined(masks: Iterable[int]) -> int:
    out = 0
    for mask in masks:
        out |= mask
    return out
