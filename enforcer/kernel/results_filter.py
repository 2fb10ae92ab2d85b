"""Failed syscalls that no rule can match stay in the kernel.

A process that opens a missing file below a watched prefix a million times a second makes a
million failed opens, every one of which crossed to userspace only to match nothing: most
rules about opens ask for `fd.num >= 0` (Falco's open_read/open_write macros) and most
about connections for `evt.rawres >= 0 or evt.res = EINPROGRESS`. For every watched
syscall, each enabled rule that can match it is partially evaluated for a failed call:
the checks on the call's own result (evt.res, evt.rawres, evt.failed, the return
argument, and fd.num for syscalls that return a descriptor) and evt.type are decided for
every errno from 1 to MAX_ERRNO with the engine's own code on the live event, every other
check stays unknown. When no rule can still match, the probe for that syscall drops calls
returning -1..-MAX_ERRNO before reading anything else (bpf/events.c; ProbeConfig.
failures_dropped). Never narrower: an undecided check keeps the failures, and results
beyond MAX_ERRNO always cross. Failed calls change no state the agent keeps (a failed
exec, chdir or setuid changes nothing; the tracker ignores them already).

Opens: rules about path traversal want failed opens too (Falco's "Directory traversal
monitored file read": `evt.res startswith E and fd.nameraw contains "../"`), so the probe
drops a failed open only when its raw path is absolute, fits the kernel's check and has no
`..`; for those, `fd.nameraw` checks that need a `..` (contains, startswith, endswith, =,
in, glob with a literal `..`) are decided false.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from enforcer.kernel.residue import _run, constant, partial
from enforcer.rules import checks, nodes
from enforcer.sources import syscalls as sc
from enforcer.sources.decode import decode, pack
from enforcer.sources.probe import ProbeConfig
from enforcer.state.live_event import LiveEvent

MAX_ERRNO = 150  # the kernel's errnos end at 133 (EHWPOISON); larger results always cross
FAILURES = range(-MAX_ERRNO, 0)


def _result_fields(s: sc.Syscall) -> frozenset[str]:
    """Fields whose value, on the live event, follows from the call's type and result."""
    out = {"evt.type", "evt.dir", "evt.rawres", "evt.res", "evt.failed", f"evt.arg.{s.ret}"}
    if s.ret_is_fd:
        out.add("fd.num")
    return frozenset(out)


def _failed_events(s: sc.Syscall) -> list[LiveEvent]:
    code = sc.CODES[s.name]
    # no process and no state: only the result fields above are ever read from these
    return [LiveEvent(decode(pack(code=code, ret=r)), None, None)  # type: ignore[arg-type]
            for r in FAILURES]


_NEEDS_DOTDOT_OPS = frozenset({"contains", "startswith", "endswith", "=", "==", "in", "glob"})


def _needs_dotdot(check: nodes.Check) -> bool:
    """`fd.nameraw OP values` that only a raw path containing `..` can satisfy."""
    if (not isinstance(check.left, nodes.Field) or check.left.name != "fd.nameraw"
            or check.left.arg is not None or check.op not in _NEEDS_DOTDOT_OPS
            or check.modifier is not None):
        return False
    if isinstance(check.right, nodes.Value):
        values = [check.right.text]
    elif isinstance(check.right, nodes.ValueList) and check.op == "in":
        values = [v.text for v in check.right.items]
    else:
        return False
    # a glob's `[...]` could stand for a dot: only plain literal text counts
    return bool(values) and all(".." in v and "[" not in v for v in values)


def _decider(s: sc.Syscall) -> Any:
    fields = _result_fields(s)
    events = _failed_events(s)
    cache: dict[int, tuple[nodes.Check, bool | None]] = {}

    def decide(check: nodes.Check) -> bool | None:
        found = cache.get(id(check))
        if found is not None and found[0] is check:
            return found[1]
        value = constant(check)
        if value is None and s.family == "open" and _needs_dotdot(check):
            value = False  # the probe keeps failed opens whose raw path has a `..`
        elif value is None and all(f.name in fields and f.arg is None
                                   for f in checks.used_fields(check)):
            seen = {_run(check, e) for e in events}
            value = seen.pop() if len(seen) == 1 else None
        cache[id(check)] = (check, value)
        return value
    return decide


def failures_matter(rule: Any, s: sc.Syscall, decide: Any = None) -> bool:
    """Whether some failed call of `s` (errno 1..MAX_ERRNO) may match `rule`."""
    types = getattr(rule, "event_types", None)
    if types is not None and s.name not in types:
        return False
    return partial(rule.expr, decide or _decider(s)) is not False


def failures_dropped(rules: Iterable[Any]) -> tuple[str, ...]:
    """The syscalls (table order) whose failed calls no enabled rule can match."""
    rules = [r for r in rules if getattr(r, "enabled", True)]
    out = []
    for s in sc.SYSCALLS:
        if s.family == "exec":
            continue  # failed execs never cross already
        decide = _decider(s)
        if not any(failures_matter(r, s, decide) for r in rules):
            out.append(s.name)
    return tuple(out)


def with_rule_filters(base: ProbeConfig, rules: Iterable[Any]) -> ProbeConfig:
    """`base` with every in-kernel filter the rules allow: the open filter and the sends
    without an address (enforcer.kernel.open_filter), the failures no rule can match. One place,
    so that the agent and `enforcer probes render` load the same C."""
    from enforcer.kernel.open_filter import open_filter_for, sends_need_address  # noqa: PLC0415

    rules = list(rules)
    filt = open_filter_for(rules)
    if filt is not None:
        base = replace(base, open_prefixes=filt.prefixes, open_suffixes=filt.suffixes)
    return replace(base, sends_need_address=sends_need_address(rules),
                   failures_dropped=failures_dropped(rules))
