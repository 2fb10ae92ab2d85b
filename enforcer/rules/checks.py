"""Static checks of a parsed condition: fields exist, operators suit the field's type,
literals convert. These are Falco's compile-time errors ("nonexistent field", operator
not supported by a field type, bad number, bad hex string)."""

from __future__ import annotations

import ipaddress
import re

from enforcer.rules import fields as registry
from enforcer.rules import nodes

STRING_OPS = frozenset({"=", "!=", "<", "<=", ">", ">=", "contains", "icontains", "startswith",
                        "endswith", "glob", "iglob", "pmatch", "regex", "in", "intersects",
                        "exists"})
OPS_BY_TYPE: dict[str, frozenset[str]] = {
    "string": STRING_OPS,
    "path": STRING_OPS,
    "number": frozenset({"=", "!=", "<", "<=", ">", ">=", "in", "intersects", "exists"}),
    "bool": frozenset({"=", "!=", "in", "intersects", "exists"}),
    "ipaddr": frozenset({"=", "!=", "in", "intersects", "exists"}),
    "ipnet": frozenset({"=", "!=", "in", "intersects", "exists"}),
    "buffer": frozenset({"=", "!=", "contains", "startswith", "endswith", "in", "intersects",
                         "bcontains", "bstartswith", "exists"}),
    "list": frozenset({"in", "intersects", "exists"}),
    "any": STRING_OPS | {"bcontains", "bstartswith"},
}
LIST_OPS = frozenset({"in", "intersects", "pmatch"})
TRANSFORM_INPUT = {
    "tolower": {"string", "path", "any"},
    "toupper": {"string", "path", "any"},
    "b64": {"string", "path", "buffer", "any"},
    "basename": {"string", "path", "any"},
    "len": {"string", "path", "buffer", "list", "any"},
}
TRANSFORM_OUTPUT = {"tolower": "string", "toupper": "string", "b64": "string",
                    "basename": "string", "len": "number"}

_INT = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|\d+)")
_FLOAT = re.compile(r"[+-]?\d+\.?\d*(?:[eE][+-]?\d+)?")


class CheckError(Exception):
    """A check that cannot compile; `pos` is the offset of the offending node."""

    def __init__(self, message: str, pos: int, unknown_field: bool = False):
        self.pos = pos
        self.unknown_field = unknown_field
        super().__init__(message)


def field_type(node: nodes.Field | nodes.Transform) -> str:
    """The value type of a field or transformed field (after validation)."""
    if isinstance(node, nodes.Transform):
        return TRANSFORM_OUTPUT[node.func]
    spec = registry.lookup(node.name)
    return spec.type if spec else "any"


def _validate_operand(node: nodes.Field | nodes.Transform) -> str:
    if isinstance(node, nodes.Field):
        why = registry.check(node.name, node.arg)
        if why:
            raise CheckError(why, node.pos, unknown_field="nonexistent" in why)
        return field_type(node)
    inner = _validate_operand(node.operand)
    if inner not in TRANSFORM_INPUT[node.func]:
        raise CheckError(f"transformer '{node.func}' does not support fields of type "
                         f"{inner}", node.pos)
    return TRANSFORM_OUTPUT[node.func]


def parse_number(text: str) -> int | float | None:
    """A numeric literal as libsinsp reads it (decimal, hex, float), or None."""
    t = text.strip()
    if _INT.fullmatch(t):
        return int(t, 0) if not re.fullmatch(r"[+-]?0\d+", t) else int(t, 10)
    if _FLOAT.fullmatch(t):
        return float(t)
    return None


def convert(value: str, type_: str, op: str):
    """The literal converted to the field's type, or raise ValueError with a reason."""
    if op in ("bcontains", "bstartswith"):
        t = value.strip()
        if not t or len(t) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", t):
            raise ValueError(f"{op} operator requires an even-length hexadecimal string, "
                             f"not '{value}'")
        return bytes.fromhex(t)
    if type_ == "number":
        n = parse_number(value)
        if n is None or isinstance(n, float) and not float(n).is_integer():
            raise ValueError(f"could not parse '{value}' as a number")
        return int(n)
    if type_ == "bool":
        t = value.strip().lower()
        if t in ("true", "false"):
            return t == "true"
        raise ValueError(f"could not parse '{value}' as a boolean (true or false)")
    if type_ == "ipaddr":
        try:
            return ipaddress.ip_address(value.strip())
        except ValueError:
            raise ValueError(f"could not parse '{value}' as an IP address") from None
    if type_ == "ipnet":
        try:
            return ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValueError(f"could not parse '{value}' as an IP network") from None
    if type_ == "buffer":
        return value.encode("latin-1", "replace")
    if type_ == "any":
        n = parse_number(value)
        return int(n) if isinstance(n, int) else value
    if "\x00" in value:
        raise ValueError("string values cannot contain a NUL byte")
    if op == "regex":
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression '{value}': {exc}") from None
    return value


def validate(check: nodes.Check) -> None:
    """Raise CheckError when `check` cannot compile."""
    ltype = _validate_operand(check.left)
    op = check.op
    if op not in OPS_BY_TYPE[ltype]:
        raise CheckError(f"operator '{op}' is not supported by field '{check.left}' of type "
                         f"{ltype}", check.pos)
    right = check.right
    if isinstance(right, nodes.FieldValue):
        if op == "regex":
            raise CheckError("regex does not support a field on the right-hand side",
                             right.pos)
        if op in ("bcontains", "bstartswith", "pmatch"):
            raise CheckError(f"operator '{op}' does not support a field on the right-hand "
                             "side", right.pos)
        rtype = _validate_operand(right.operand)
        if not _compatible(ltype, rtype):
            raise CheckError(f"cannot compare field '{check.left}' of type {ltype} with "
                             f"'{right}' of type {rtype}", right.pos)
        return
    if check.modifier:
        if op in LIST_OPS or op in ("<", "<=", ">", ">=") or op == "exists":
            raise CheckError(f"'{op} {check.modifier}' is not a supported comparison "
                             "operator", check.pos)
        if not isinstance(right, nodes.ValueList):
            raise CheckError(f"'{check.modifier}' must be followed by a list", check.pos)
        vtype = "string" if ltype == "list" else ltype
        for item in right.items:
            try:
                convert(item.text, vtype, op)
            except ValueError as exc:
                raise CheckError(str(exc), item.pos) from None
        return
    if op in LIST_OPS and not isinstance(right, nodes.ValueList):
        raise CheckError(f"operator '{op}' requires a list of values", check.pos)
    if isinstance(right, nodes.ValueList):
        if op not in LIST_OPS:
            raise CheckError(f"operator '{op}' does not take a list", right.pos)
        items = right.items
    elif right is None:
        return
    else:
        items = (right,)
    vtype = "string" if ltype == "list" else ltype
    for item in items:
        try:
            convert(item.text, vtype, op)
        except ValueError as exc:
            raise CheckError(str(exc), item.pos) from None


def _compatible(a: str, b: str) -> bool:
    groups = ({"string", "path", "any", "buffer"}, {"number", "any"}, {"bool", "any"},
              {"ipaddr", "ipnet", "any"}, {"list", "any"})
    return a == b or any(a in g and b in g for g in groups)


def used_fields(expr: nodes.Expr) -> list[nodes.Field]:
    """Every field referenced by the condition, left and right sides."""
    out = []
    for node in nodes.walk(expr):
        if isinstance(node, nodes.Check):
            out.append(node.field)
            if isinstance(node.right, nodes.FieldValue):
                op = node.right.operand
                out.append(op if isinstance(op, nodes.Field) else op.field)
    return out
