"""The one small interface every response implements, and the strict parameter parsing that
catches policy mistakes when policies load, not when a rule fires.

An action module defines a frozen `Params` dataclass (subclass of `Params`) and an `Action`
subclass with `name`, `required_fields`, `target_fields`, `example`, `rbac`,
`plan(context) -> Plan` and `apply(plan, dry_run) -> Outcome`. Dry-run is decided by the
responder and passed to `apply`; an action never decides it on its own.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from enforcer.errors import ActionError


class ParamError(ValueError):
    """A parameter is wrong. `key` names it (None: the parameter block as a whole; a tuple:
    the path to it inside a nested block such as snapshot's `upload`)."""

    def __init__(self, key: str | tuple[str, ...] | None, message: str,
                 unknown_key: bool = False):
        self.key = key
        self.unknown_key = unknown_key  # locate the key itself, not its value
        super().__init__(message)


def param(default: Any = dataclasses.MISSING, *, parse: Callable[[Any], Any] | None = None,
          schema: dict[str, Any] | None = None, doc: str = "") -> Any:
    """A Params field. `parse` converts the YAML value (e.g. `50Mi` to bytes) and raises
    ValueError when it is wrong; `schema` is its JSON Schema when the type alone cannot say."""
    meta = {"parse": parse, "schema": schema, "doc": doc}
    if isinstance(default, list | dict | set):
        raise TypeError("use a tuple or a default_factory for mutable defaults")
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Params:
    """Base of every action's parameters: frozen, strict about keys and types."""

    @classmethod
    def from_mapping(cls, raw: object) -> Params:
        """Build from a policy's YAML. Unknown keys, missing keys and wrong types raise
        ParamError naming the key."""
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ParamError(None, f"parameters must be a mapping, got {_type_word(raw)}")
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(str(key), list(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                allowed = ", ".join(known) or "none"
                raise ParamError(str(key), f"unknown parameter {key!r}{hint} "
                                           f"(allowed: {allowed})", unknown_key=True)
        values: dict[str, Any] = {}
        for name, spec in known.items():
            if name not in raw:
                if spec.default is dataclasses.MISSING and \
                        spec.default_factory is dataclasses.MISSING:
                    raise ParamError(None, f"missing required parameter {name!r}")
                continue
            value = raw[name]
            parse = spec.metadata.get("parse")
            try:
                if parse is not None and value is not None:
                    values[name] = parse(value)
                else:
                    values[name] = _coerce(value, hints[name])
            except ParamError as exc:  # a nested block: keep the path to the bad key
                inner = exc.key if isinstance(exc.key, tuple) else \
                    ((exc.key,) if exc.key is not None else ())
                joiner = "." if inner and not exc.unknown_key else ": "
                raise ParamError((name, *inner), f"{name}{joiner}{exc}",
                                 unknown_key=exc.unknown_key) from None
            except ValueError as exc:
                raise ParamError(name, f"{name}: {exc}") from None
        try:
            return cls(**values)
        except ValueError as exc:
            raise ParamError(getattr(exc, "key", None), str(exc)) from None

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """JSON Schema of this parameter block (additionalProperties: false)."""
        hints = typing.get_type_hints(cls)
        props: dict[str, Any] = {}
        required = []
        for spec in dataclasses.fields(cls):
            schema = spec.metadata.get("schema") or _schema_for(hints[spec.name])
            schema = dict(schema)
            if spec.metadata.get("doc"):
                schema["description"] = spec.metadata["doc"]
            if spec.default is not dataclasses.MISSING and spec.default is not None:
                default = spec.default
                schema["default"] = list(default) if isinstance(default, tuple) else default
            props[spec.name] = schema
            if spec.default is dataclasses.MISSING and \
                    spec.default_factory is dataclasses.MISSING:
                required.append(spec.name)
        doc: dict[str, Any] = {"type": "object", "properties": props,
                               "additionalProperties": False}
        if required:
            doc["required"] = required
        return doc


def _type_word(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer",
            float: "a number", bool: "a boolean", type(None): "nothing"}.get(
        type(value), type(value).__name__)


def _coerce(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if len(errors) == 1 else " or ".join(errors))
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {_type_word(value)} {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_type_word(value)} {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {_type_word(value)} {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {_type_word(value)} {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list, got {_type_word(value)} {value!r}")
        return tuple(_coerce(item, args[0]) for item in value)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a mapping, got {_type_word(value)} {value!r}")
        key_t, val_t = args or (str, Any)
        return {_coerce(k, key_t): _coerce(v, val_t) for k, v in value.items()}
    if hint is Any:
        return value
    raise TypeError(f"unsupported parameter type {hint!r}")


def _schema_for(hint: Any) -> dict[str, Any]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [_schema_for(a) for a in args]
        return {"anyOf": options}
    if hint is type(None):
        return {"type": "null"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if hint in simple:
        return {"type": simple[hint]}
    if origin is tuple:
        return {"type": "array", "items": _schema_for(args[0])}
    if origin is dict or hint is dict:
        return {"type": "object", "additionalProperties": _schema_for(args[1]) if args else {}}
    return {}


@dataclass(frozen=True)
class Plan:
    """What an action will do to which target, resolved when the rule fires.

    `target` identifies the object (structured: pid + start time, namespace/pod, node…);
    `render` is the exact operation (signal, API call and body, filter) that `apply` performs,
    shown as-is in dry-run; `private` holds live handles (a pidfd) that are not audited."""

    action: str
    target: dict[str, Any]
    render: dict[str, Any]
    summary: str
    private: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


# Outcomes, as audited.
DONE = "done"
NOOP = "noop"
DRY_RUN = "dry-run"
FAILED = "failed"
SUPPRESSED = "suppressed"
SKIPPED = "skipped"
RATE_LIMITED = "rate-limited"
COOLDOWN = "cooldown"
DONE_IN_KERNEL = "done-in-kernel"  # the BPF program already killed it at the syscall


@dataclass(frozen=True)
class FollowUp:
    """Work an action leaves for the background once its own outcome is audited (a
    snapshot's upload), so that the actions after it (a kill) do not wait for it.

    The responder runs `run()` on its follow-up thread, retries TemporaryActionError within
    its retry bounds, and audits the result as its own action record named
    `<action>.<name>`; an ActionError's `detail` (what was achieved) goes into that record."""

    name: str
    run: Callable[[], Outcome]


@dataclass(frozen=True)
class Outcome:
    """What `apply` achieved: `status` is done, noop or dry-run (failures raise).

    `follow_up`, when set, is background work whose outcome is audited separately."""

    status: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)
    follow_up: FollowUp | None = field(default=None, compare=False, repr=False)


class Refused(ActionError):
    """A guard refused the action (PID 1, kernel thread, the agent, protected namespace,
    another node's pod). Never retried, never overridable by a policy."""

    def __init__(self, guard: str, message: str):
        self.guard = guard
        super().__init__(message)


class AlreadyDone(ActionError):
    """The desired end state already holds (pod gone, node cordoned): the outcome is noop."""


class Action:
    """Base class of every response. Subclasses set the class attributes and implement
    `plan` and `apply`."""

    name: ClassVar[str]
    params_type: ClassVar[type[Params]]
    #: event fields without which the action is skipped (and audited), never guessed
    required_fields: ClassVar[tuple[str, ...]] = ()
    #: event fields that identify the target, for per-target cooldowns
    target_fields: ClassVar[tuple[str, ...]] = ()
    #: mutates when applied for real: the policy's blast-radius breaker covers it
    destructive: ClassVar[bool] = False
    #: changes the target (so protected-namespace guards apply)
    mutating: ClassVar[bool] = True
    #: reaches outside the node even in dry-run (notify); skipped in dry-run for alerts the
    #: agent received rather than detected (see Responder.received_alerts)
    acts_in_dry_run: ClassVar[bool] = False
    #: Kubernetes RBAC rules the agent's ClusterRole needs for this action
    rbac: ClassVar[tuple[dict[str, Any], ...]] = ()
    #: a policy snippet using this action
    example: ClassVar[str] = ""

    def __init__(self, params: Params):
        self.params = params

    def missing_fields(self, event: Any) -> list[str]:
        """Required fields the event lacks."""
        return [f for f in self.required_fields if _absent(event, f)]

    def plan(self, context: Any) -> Plan:  # pragma: no cover - interface
        raise NotImplementedError

    def apply(self, plan: Plan, dry_run: bool) -> Outcome:  # pragma: no cover - interface
        raise NotImplementedError

    def release(self, plan: Plan) -> None:
        """Free live handles held by a plan (pidfds). Called whatever the outcome."""


def _absent(event: Any, name: str) -> bool:
    if event is None:
        return True
    value = event.get(name)
    return value is None or value == "" or value == "<NA>"
