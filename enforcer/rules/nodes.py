"""The condition AST: frozen dataclass nodes, shared by the parser, loader and compiler.

A rule's `expr` is the fully expanded condition: lists are spliced in, every macro
reference is replaced by a `Macro` node that carries the macro's own expanded body
(semantically `Macro(name, expr)` is just `expr`; the wrapper lets the compiler evaluate
a shared macro once per event and lets tools explain which macro matched), and the rule's
exceptions are appended as `and not (...)`. There are no unresolved `Identifier` nodes in
a compiled rule.

Node overview:
- boolean structure: `And(children)`, `Or(children)`, `Not(child)`, `Macro(name, expr)`
- a check: `Check(left, op, right, modifier=None)`; `left` is a `Field` or a `Transform`
  of one; `right` is None (`exists`), a `Value`, a `ValueList` (`in`, `intersects`, `pmatch`) or a
  `FieldValue` (`val(f)` or a transformer on the right: field-to-field comparison).
- `Identifier(name)`: a bare word in check position, i.e. a macro reference (parser output
  only; resolved away by the loader).

`pos` attributes are offsets into the condition text the node was parsed from; they are
excluded from equality so that equal conditions compare equal wherever they were written.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Field:
    """A field reference: `proc.name`, `proc.aname[2]` (arg "2"), `evt.arg[0]`."""

    name: str
    arg: str | None = None
    pos: int = field(default=0, compare=False)

    @property
    def key(self) -> str:
        """The field as written in rules and event keys: `name` or `name[arg]`."""
        return self.name if self.arg is None else f"{self.name}[{self.arg}]"

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class Transform:
    """A transformer applied to a field: tolower, toupper, b64, basename, len."""

    func: str
    operand: Field | Transform
    pos: int = field(default=0, compare=False)

    @property
    def field(self) -> Field:
        """The innermost field."""
        node: Field | Transform = self
        while isinstance(node, Transform):
            node = node.operand
        return node

    def __str__(self) -> str:
        return f"{self.func}({self.operand})"


@dataclass(frozen=True)
class Value:
    """A literal operand. `quoted` tells whether it was written in quotes (never a list ref)."""

    text: str
    quoted: bool = False
    pos: int = field(default=0, compare=False)

    def __str__(self) -> str:
        if self.quoted or not self.text or any(c in self.text for c in " \t\n(),=\"'"):
            return '"' + self.text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return self.text


@dataclass(frozen=True)
class ValueList:
    """A parenthesised list of literals, after list expansion."""

    items: tuple[Value, ...]
    pos: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return "(" + ", ".join(str(v) for v in self.items) + ")"


@dataclass(frozen=True)
class FieldValue:
    """A right-hand side that is another field of the same event: `val(f)` or `tolower(f)`."""

    operand: Field | Transform
    pos: int = field(default=0, compare=False)

    def __str__(self) -> str:
        if isinstance(self.operand, Field):
            return f"val({self.operand})"
        return str(self.operand)


Operand = Value | ValueList | FieldValue | None


@dataclass(frozen=True)
class Check:
    """`left op right`; `right` is None for `exists`.

    `modifier` ("oneof", "anyof", "allof") applies a comparison operator to each element
    of a `ValueList`: at least one, every one, or exactly one must satisfy it (all false
    for an empty list)."""

    left: Field | Transform
    op: str
    right: Operand = None
    pos: int = field(default=0, compare=False)
    modifier: str | None = None

    @property
    def field(self) -> Field:
        """The field being checked (inside any transformer)."""
        return self.left if isinstance(self.left, Field) else self.left.field

    def __str__(self) -> str:
        if self.right is None:
            return f"{self.left} {self.op}"
        if self.modifier:
            return f"{self.left} {self.op} {self.modifier} {self.right}"
        return f"{self.left} {self.op} {self.right}"


@dataclass(frozen=True)
class And:
    children: tuple[Expr, ...]

    def __str__(self) -> str:
        return "(" + " and ".join(str(c) for c in self.children) + ")"


@dataclass(frozen=True)
class Or:
    children: tuple[Expr, ...]

    def __str__(self) -> str:
        return "(" + " or ".join(str(c) for c in self.children) + ")"


@dataclass(frozen=True)
class Not:
    child: Expr

    def __str__(self) -> str:
        return f"not {self.child}"


@dataclass(frozen=True)
class Identifier:
    """A bare word in check position: a macro reference, before expansion."""

    name: str
    pos: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Macro:
    """An expanded macro reference; evaluates exactly like `expr`."""

    name: str
    expr: Expr

    def __str__(self) -> str:
        return f"({self.expr})"


Expr = And | Or | Not | Check | Identifier | Macro


def walk(expr: Expr):
    """Yield every boolean node of `expr` (pre-order, iteratively: no recursion limit)."""
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, And | Or):
            stack.extend(reversed(node.children))
        elif isinstance(node, Not):
            stack.append(node.child)
        elif isinstance(node, Macro):
            stack.append(node.expr)


def depth(expr: Expr) -> int:
    """Nesting depth of the boolean structure, computed without recursion."""
    best = 0
    stack: list[tuple[Expr, int]] = [(expr, 1)]
    while stack:
        node, d = stack.pop()
        best = max(best, d)
        if isinstance(node, And | Or):
            stack.extend((c, d + 1) for c in node.children)
        elif isinstance(node, Not):
            stack.append((node.child, d + 1))
        elif isinstance(node, Macro):
            stack.append((node.expr, d + 1))
    return best
