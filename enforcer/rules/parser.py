"""Parse Falco condition text into the AST of `enforcer.rules.nodes`.

The grammar is `condition.lark` (LALR, contextual lexer); the transformer runs inline
during the LALR reductions, so parsing never recurses and deep input cannot overflow the
Python stack. Syntax errors become `ConditionSyntaxError` with the offset into the text
and what was expected; the loader maps the offset back to FILE:LINE:COL.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from enforcer.rules import nodes

# Falco's loader raises libsinsp's parser depth limit to 1000 for rules.
MAX_DEPTH = 1000

_TERMINAL_NAMES = {
    "OR": "'or'", "AND": "'and'", "NOT": "'not'", "LPAR": "'('", "RPAR": "')'",
    "COMMA": "','", "IDENT": "a macro or list name", "FIELD": "a field",
    "LFUNC": "a transformer", "RFUNC": "val() or a transformer", "EXISTS": "'exists'",
    "NUMOP": "a numeric operator", "STROP": "a comparison operator",
    "LISTOP": "'in', 'intersects' or 'pmatch'", "NUMBER": "a number",
    "QSTRING": "a quoted string", "BARESTR": "a value", "$END": "end of condition",
    "MODIFIER": "oneof, anyof or allof",
}


class ConditionSyntaxError(Exception):
    """A condition that does not parse; `pos` is the offset into the condition text."""

    def __init__(self, message: str, pos: int):
        self.pos = pos
        super().__init__(message)


def unescape(quoted: str, pos: int = 0) -> str:
    """The value of a quoted condition string, with Falco's escapes.

    Like libsinsp: \\b \\f \\n \\r \\t, \\\\ and \\/, the string's own quote, and \\xHH (a
    byte). `\\ ` yields a backslash (libsinsp keeps this for old rules). Escaping the
    other kind of quote or any other character is an error.
    """
    delim, body = quoted[0], quoted[1:-1]
    out: list[str] = []
    i = 0
    simple = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "\\": "\\", " ": "\\",
              "/": "/"}
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt in simple:
            out.append(simple[nxt])
            i += 2
        elif nxt in "\"'" and nxt:
            if nxt != delim:
                kind = "'" if delim == "'" else '"'
                raise ConditionSyntaxError(
                    f"invalid \\{nxt} escape in {kind}-quoted string", pos + i + 1)
            out.append(nxt)
            i += 2
        elif nxt == "x":
            digits = body[i + 2:i + 4]
            if len(digits) != 2 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ConditionSyntaxError(
                    "invalid \\x escape: expected two hexadecimal digits", pos + i + 1)
            out.append(chr(int(digits, 16)))
            i += 4
        else:
            raise ConditionSyntaxError(
                f"unsupported string escape sequence: \\{nxt}", pos + i + 1)
    return "".join(out)


def _field(token: Token) -> nodes.Field:
    text = str(token)
    if "[" in text:
        name, arg = text[:-1].split("[", 1)
        if arg[:1] in "\"'":
            arg = unescape(arg, token.start_pos + len(name) + 1)
        return nodes.Field(name, arg, token.start_pos)
    return nodes.Field(text, None, token.start_pos)


class _Build(Transformer):
    """Turns the parse into `nodes`; runs inline inside the LALR parser."""

    def start(self, children):
        return children[0]

    def or_expr(self, children):
        return nodes.Or(tuple(c for c in children if not isinstance(c, Token)))

    def and_expr(self, children):
        return nodes.And(tuple(c for c in children if not isinstance(c, Token)))

    def not_expr(self, children):
        return nodes.Not(children[1])

    def paren(self, children):
        return children[1]

    @v_args(inline=True)
    def identifier(self, token):
        return nodes.Identifier(str(token), token.start_pos)

    @v_args(inline=True)
    def unary(self, lhs, op):
        return nodes.Check(lhs, "exists", None, _pos(lhs))

    @v_args(inline=True)
    def binary(self, lhs, op, right):
        name = str(op)
        if name == "==":
            name = "="
        return nodes.Check(lhs, name, right, _pos(lhs))

    @v_args(inline=True)
    def modified(self, lhs, op, modifier, right):
        name = str(op)
        if name == "==":
            name = "="
        if not isinstance(right, nodes.ValueList):
            raise ConditionSyntaxError(f"'{modifier}' must be followed by a list", right.pos)
        return nodes.Check(lhs, name, right, _pos(lhs), str(modifier))

    @v_args(inline=True)
    def field(self, token):
        return _field(token)

    @v_args(inline=True)
    def transform(self, func, operand, _rpar):
        return nodes.Transform(str(func)[:-1], operand, func.start_pos)

    @v_args(inline=True)
    def rhs_field(self, func, operand, _rpar):
        name = str(func)[:-1]
        if name == "val":
            if not isinstance(operand, nodes.Field):
                raise ConditionSyntaxError(
                    "val() takes exactly one field, not a transformer", operand.pos)
            return nodes.FieldValue(operand, func.start_pos)
        return nodes.FieldValue(nodes.Transform(name, operand, func.start_pos), func.start_pos)

    @v_args(inline=True)
    def number(self, token):
        return nodes.Value(str(token), False, token.start_pos)

    @v_args(inline=True)
    def qstring(self, token):
        return nodes.Value(unescape(str(token), token.start_pos), True, token.start_pos)

    @v_args(inline=True)
    def barestr(self, token):
        return nodes.Value(str(token), False, token.start_pos)

    def value_list(self, children):
        lpar = children[0]
        items = tuple(c for c in children if isinstance(c, nodes.Value))
        return nodes.ValueList(items, lpar.start_pos)

    @v_args(inline=True)
    def list_ref(self, token):
        # `f in name`: a list reference without parentheses; a one-item list that the
        # loader's list expansion turns into the list's items.
        return nodes.ValueList((nodes.Value(str(token), False, token.start_pos),),
                               token.start_pos)


def _pos(node) -> int:
    return getattr(node, "pos", 0)


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = (Path(__file__).with_name("condition.lark")).read_text()
    return Lark(grammar, parser="lalr", lexer="contextual", transformer=_Build(),
                propagate_positions=False, maybe_placeholders=False)


def _check_nesting(text: str) -> None:
    """Reject absurd parenthesis nesting before parsing (Falco: 'exceeded max depth')."""
    level = 0
    quote = ""
    escaped = False
    for i, c in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "(":
            level += 1
            if level >= MAX_DEPTH:
                raise ConditionSyntaxError(f"exceeded max depth limit of {MAX_DEPTH}", i)
        elif c == ")":
            level -= 1


def _expected(exc: UnexpectedInput) -> str:
    names = (getattr(exc, "accepts", None) or getattr(exc, "expected", None)
             or getattr(exc, "allowed", None) or set())
    words = sorted({_TERMINAL_NAMES.get(n, n) for n in names})
    return ", ".join(words)


def parse(text: str) -> nodes.Expr:
    """Parse a condition. Raises ConditionSyntaxError (message and offset)."""
    if not text.strip():
        raise ConditionSyntaxError("filter input string is empty", 0)
    _check_nesting(text)
    try:
        expr = _parser().parse(text)
    except ConditionSyntaxError:
        raise
    except UnexpectedEOF as exc:
        raise ConditionSyntaxError(
            f"unexpected end of condition, expecting {_expected(exc)}", len(text)) from None
    except UnexpectedToken as exc:
        tok = exc.token
        pos = len(text) if tok.type == "$END" or tok.start_pos is None else tok.start_pos
        what = "end of condition" if tok.type == "$END" else repr(str(tok))
        raise ConditionSyntaxError(
            f"unexpected {what}, expecting {_expected(exc)}", pos) from None
    except UnexpectedCharacters as exc:
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        raise ConditionSyntaxError(
            f"unexpected {ch!r}, expecting {_expected(exc)}", exc.pos_in_stream) from None
    except UnexpectedInput as exc:  # pragma: no cover - other lark input errors
        raise ConditionSyntaxError(str(exc).splitlines()[0], getattr(exc, "pos_in_stream", 0)
                                   or 0) from None
    if nodes.depth(expr) > MAX_DEPTH:
        raise ConditionSyntaxError(f"exceeded max depth limit of {MAX_DEPTH}", 0)
    return expr
