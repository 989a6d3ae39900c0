"""The `filter:` processor's expression language, compiled to a `pyarrow.compute` Expression.

A small, safe language over a table's columns. Nothing is ever evaluated as
Python: a tokenizer and a Pratt (precedence-climbing) parser build a tiny AST of
frozen dataclasses, a static check rejects what can only be a mistake, and the
AST is translated to a `pyarrow.compute.Expression` that pyarrow evaluates.

Why one module of ~900 lines: its four parts share one node type and one error
type (with the caret position), and each is small. A rewrite on Python's `ast`
with a node whitelist was built and measured (issue 8): it needed our scanner
anyway (backticks, escapes, keyword case, number rules), a token-level pass for
messages Python's parser gives at offset 0, and a mapping back from Python's wider
grammar — 1,107 lines against 886 — so this parser stayed.

Grammar, loosest binding first::

    or                          a or b
    and                         a and b
    not                         not a
    comparison, in, is          == != < <= > >=   x in (1, 2)   x not in [1, 2]
                                x is null   x is not null      (not chainable)
    + -                         additive, left-associative
    * / %                       multiplicative, left-associative
    unary -                     -x
    atoms                       42  1.5  1e-3  'text'  "text"  true  false  null
                                column  `column with spaces`  ( expression )

Keywords (`and or not in is null true false`) are case-insensitive; a column
whose name is a keyword, or holds spaces or symbols, is written in backticks.
Strings and backticked names take the escapes ``\\\\ \\' \\" \\` \\n \\r \\t \\0 \\uXXXX``.

Semantics are SQL's three-valued logic: a comparison or `in` with a null
operand is null (unknown), `and`/`or`/`not` follow Kleene logic, and a filter
keeps only the rows where the expression is true — null counts as false. So
`x != 1` and `x not in (1, 2)` do not keep rows where `x` is null; write
`x is null or x != 1` for that. `/` is true (floating-point) division, `%` is
Python's modulo (the sign of the divisor); float division by zero gives
inf/NaN, integer `%` by zero and integer overflow fail. NaN is not null.

Limits against hostile input: at most `MAX_LENGTH` characters and `MAX_DEPTH`
levels of nesting. Every problem raises `FilterSyntaxError` (a
`WorkflowError`), whose message shows the expression with a caret under the
offending position and says what was expected.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import WorkflowError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc

MAX_LENGTH = 10_000
MAX_DEPTH = 100

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null", "true", "false"})
ARITHMETIC = ("+", "-", "*", "/", "%")
COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")


# ---------------------------------------------------------------- errors


class FilterSyntaxError(WorkflowError):
    """A filter expression is invalid: the message shows it with a caret under the problem."""

    def __init__(
        self,
        problem: str,
        *,
        expression: str,
        position: int,
        hint: str | None = None,
        stage: str | None = None,
        key: str | None = None,
    ) -> None:
        self.problem = problem
        self.expression = expression
        self.position = position
        super().__init__(
            _with_snippet(problem, expression, position), stage=stage, key=key, hint=hint
        )

    def with_context(
        self, prefix: str = "", *, stage: str | None = None, key: str | None = None
    ) -> FilterSyntaxError:
        """A copy whose message starts with `prefix` (e.g. "processor 2 (`filter`): ")."""
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.message = prefix + self.message
        new.args = (new.message,)
        new.stage = stage if stage is not None else self.stage
        new.key = key if key is not None else self.key
        return new


class UnknownColumnError(FilterSyntaxError):
    """The expression names a column the table does not have (`name`; `suggestion` or None)."""

    def __init__(
        self,
        name: str,
        *,
        expression: str,
        position: int,
        suggestion: str | None,
        columns: Sequence[str],
    ) -> None:
        self.name = name
        self.suggestion = suggestion
        super().__init__(
            f"unknown column `{name}`",
            expression=expression,
            position=position,
            hint=column_hint(name, columns, suggestion),
        )


def suggest_column(name: str, columns: Iterable[str]) -> str | None:
    """The nearest column name to `name` (same name in another case first), or None."""
    columns = list(columns)
    folded = [c for c in columns if c.casefold() == name.casefold()]
    if folded:
        return folded[0]
    close = difflib.get_close_matches(name, columns, n=1)
    return close[0] if close else None


def column_hint(name: str, columns: Sequence[str], suggestion: str | None = None) -> str:
    """"did you mean `x`?" when a column is close, else the table's columns."""
    suggestion = suggestion if suggestion is not None else suggest_column(name, columns)
    if suggestion is not None:
        quoted = "" if _is_plain_name(suggestion) else " (write it in backticks in a filter)"
        return f"did you mean `{suggestion}`?{quoted}"
    if name in ("None", "NULL", "nil"):
        return "write `null` for a missing value, e.g. `x is null`"
    if not columns:
        return "the table has no columns"
    listed = ", ".join(f"`{c}`" for c in columns[:12])
    more = f", ... ({len(columns)} in all)" if len(columns) > 12 else ""
    return f"the table's columns: {listed}{more}"


def _with_snippet(problem: str, text: str, position: int) -> str:
    """`problem`, then the line of `text` holding `position` with a caret under it."""
    position = max(0, min(position, len(text)))
    line_start = text.rfind("\n", 0, position) + 1
    line_end = text.find("\n", position)
    line_end = len(text) if line_end < 0 else line_end
    line_no = text.count("\n", 0, position) + 1
    col = position - line_start
    line = text[line_start:line_end]
    # Show at most ~70 characters either side of the caret.
    left, right = max(0, col - 70), min(len(line), col + 70)
    shown = ("..." if left else "") + line[left:right] + ("..." if right < len(line) else "")
    before = ("..." if left else "") + line[left:col]
    shown = "".join(_display_char(ch) for ch in shown)
    pad = sum(_display_width(ch) for ch in before)
    where = f" (line {line_no}, column {col + 1})" if "\n" in text else ""
    return f"{problem}{where}\n    {shown}\n    {' ' * pad}^"


def _display_char(ch: str) -> str:
    if ch == "\t":
        return " "
    return ch if ch.isprintable() else "?"


def _display_width(ch: str) -> int:
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


# ---------------------------------------------------------------- AST


class Node:
    """Base of the expression AST. Each node's `pos` (offset into the text) is not compared."""

    # Not a dataclass: each subclass declares `pos` as a defaulted field after its own fields,
    # which a field here would precede. This annotation only tells the type checker about it.
    pos: int


@dataclass(frozen=True)
class Literal(Node):
    value: int | float | str | bool | None
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Column(Node):
    name: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Unary(Node):
    op: str  # "-" or "not"
    operand: Node
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Binary(Node):
    op: str  # one of ARITHMETIC or COMPARISONS
    left: Node
    right: Node
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class BoolOp(Node):
    op: str  # "and" or "or"; chains are flattened: a or b or c → BoolOp("or", (a, b, c))
    operands: tuple[Node, ...]
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class In(Node):
    operand: Node
    items: tuple[Node, ...]
    negated: bool = False
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class IsNull(Node):
    operand: Node
    negated: bool = False
    pos: int = field(default=0, compare=False)


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Unary | IsNull):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, BoolOp):
        return node.operands
    if isinstance(node, In):
        return (node.operand, *node.items)
    return ()


def walk(node: Node) -> Iterator[Node]:
    """Every node, parents before children, left to right (iterative: no recursion)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


def columns_used(node: Node) -> set[str]:
    """The names of the columns an expression reads."""
    return {n.name for n in walk(node) if isinstance(n, Column)}


# ---------------------------------------------------------------- tokens


class Token(NamedTuple):
    kind: str  # num str name qname kw op eof
    value: Any
    pos: int
    end: int


_DIGITS = frozenset("0123456789")
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "(", ")", "[", "]", ",")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "`": "`", "n": "\n", "r": "\r", "t": "\t", "0": "\0"}
_SURROGATE = re.compile("[\ud800-\udfff]")
_BAD_CHARS = {
    "=": ("`=` is not an operator", "use `==` to compare"),
    "!": ("`!` is not an operator", "use `not` to negate, or `!=` for not-equal"),
    "&": ("`&` is not an operator", "use `and`"),
    "|": ("`|` is not an operator", "use `or`"),
    ".": ("attribute access is not supported", "columns are plain names; write `a.b` as `` `a.b` `` if that is a column's name"),
    ";": ("`;` is not allowed", "a filter is one expression"),
    ":": ("`:` is not allowed", None),
}


class _Tokenizer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, problem: str, position: int, hint: str | None = None) -> FilterSyntaxError:
        return FilterSyntaxError(problem, expression=self.text, position=position, hint=hint)

    def next(self) -> Token:
        text, n = self.text, len(self.text)
        while self.pos < n and text[self.pos].isspace():
            self.pos += 1
        start = self.pos
        if start >= n:  # point just past the last character that is not white space
            end = len(text.rstrip())
            return Token("eof", None, end, end)
        ch = text[start]
        if ch in _DIGITS or (ch == "." and text[start + 1 : start + 2] in _DIGITS):
            return self.number(start)
        if ch == "_" or ch.isalpha():
            end = start + 1
            while end < n and (text[end] == "_" or text[end].isalnum()):
                end += 1
            self.pos = end
            word = text[start:end]
            if word.lower() in KEYWORDS:
                return Token("kw", word.lower(), start, end)
            return Token("name", word, start, end)
        if ch in "'\"":
            value = self.quoted(start, ch, "string")
            return Token("str", value, start, self.pos)
        if ch == "`":
            value = self.quoted(start, ch, "column name")
            if not value:
                raise self.error("empty column name", start, "write a column name between backticks")
            return Token("qname", value, start, self.pos)
        for op in _OPERATORS:
            if text.startswith(op, start):
                self.pos = start + len(op)
                return Token("op", op, start, self.pos)
        if ch in _BAD_CHARS:
            problem, hint = _BAD_CHARS[ch]
            raise self.error(problem, start, hint)
        shown = ch if ch.isprintable() and not ch.isspace() else f"U+{ord(ch):04X}"
        raise self.error(
            f"unexpected character `{shown}`: expected a value or an operator", start
        )

    def number(self, start: int) -> Token:
        match = _NUMBER.match(self.text, start)
        assert match is not None  # the caller saw a digit
        end = match.end()
        if end < len(self.text) and (self.text[end] == "_" or self.text[end].isalnum()):
            while end < len(self.text) and (self.text[end] == "_" or self.text[end].isalnum()):
                end += 1
            raise self.error(
                f"invalid number `{self.text[start:end]}`", start,
                "numbers are written like 42, 1.5 or 2e-3",
            )
        self.pos = end
        literal = match.group()
        if any(c in literal for c in ".eE"):
            return Token("num", float(literal), start, end)
        digits = literal.lstrip("0") or "0"
        if len(digits) > 19 or int(digits) > -_INT_MIN:
            raise self.error(
                "integer is too large (the limit is 64 bits)", start,
                "write a float instead, e.g. 1e20",
            )
        return Token("num", int(digits), start, end)

    def quoted(self, start: int, quote: str, what: str) -> str:
        text, n = self.text, len(self.text)
        parts: list[str] = []
        i = start + 1
        while True:
            if i >= n:
                raise self.error(
                    f"unterminated {what}: expected a closing {quote}", start,
                    f"close it with {quote}, or write \\{quote} for a {quote} inside it",
                )
            ch = text[i]
            if ch == quote:
                self.pos = i + 1
                return "".join(parts)
            if ch != "\\":
                parts.append(ch)
                i += 1
                continue
            if i + 1 >= n:
                i += 1
                continue  # a backslash at the very end: unterminated
            esc = text[i + 1]
            if esc in _ESCAPES:
                parts.append(_ESCAPES[esc])
                i += 2
            elif esc == "u":
                digits = text[i + 2 : i + 6]
                if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise self.error("`\\u` needs four hex digits, e.g. \\u00e9", i)
                code = int(digits, 16)
                if 0xD800 <= code <= 0xDFFF:
                    raise self.error("`\\u` escape is a lone surrogate, not a character", i)
                parts.append(chr(code))
                i += 6
            else:
                shown = esc if esc.isprintable() and not esc.isspace() else f"U+{ord(esc):04X}"
                raise self.error(
                    f"unknown escape `\\{shown}` in {what}", i,
                    "escapes are \\\\ \\' \\\" \\` \\n \\r \\t \\0 \\uXXXX; write \\\\ for a backslash",
                )


# ---------------------------------------------------------------- parser

# Binding powers, loosest first.
_OR, _AND, _NOT, _CMP, _ADD, _MUL, _UNARY = 1, 2, 3, 4, 5, 6, 7
_INFIX = {
    "or": _OR, "and": _AND, "in": _CMP, "is": _CMP, "not": _CMP,
    **{op: _CMP for op in COMPARISONS},
    "+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL, "%": _MUL,
}  # fmt: skip


def _describe(token: Token, text: str) -> str:
    if token.kind == "eof":
        return "the end of the expression"
    if token.kind == "num":
        return f"number `{text[token.pos : token.end]}`"
    if token.kind == "str":
        shown = token.value if len(token.value) <= 20 else token.value[:20] + "..."
        return f"string {shown!r}"
    if token.kind in ("name", "qname"):
        return f"name `{token.value}`"
    return f"`{token.value}`"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokenizer = _Tokenizer(text)
        self.tokens: list[Token] = []  # read lazily, so the first problem is the one reported
        self.i = 0
        self.depth = 0

    def error(self, problem: str, position: int, hint: str | None = None) -> FilterSyntaxError:
        return FilterSyntaxError(problem, expression=self.text, position=position, hint=hint)

    def describe(self, token: Token) -> str:
        return _describe(token, self.text)

    def peek(self, ahead: int = 0) -> Token:
        while len(self.tokens) <= self.i + ahead:
            if self.tokens and self.tokens[-1].kind == "eof":
                return self.tokens[-1]
            self.tokens.append(self.tokenizer.next())
        return self.tokens[self.i + ahead]

    def advance(self) -> Token:
        token = self.peek()
        self.i += 1
        return token

    def is_op(self, token: Token, *ops: str) -> bool:
        return token.kind in ("op", "kw") and token.value in ops

    def parse(self) -> Node:
        if self.peek().kind == "eof":
            raise self.error(
                "empty expression: expected a condition", 0, "e.g. `score >= 0.5 and lang == 'en'`"
            )
        node = self.expression(0)
        token = self.peek()
        if token.kind != "eof":
            raise self.unexpected_after_value(token, "an operator or the end of the expression")
        return node

    def unexpected_after_value(self, token: Token, expected: str) -> FilterSyntaxError:
        hint = None
        if token.kind in ("name", "qname", "num", "str") or self.is_op(token, "(", "["):
            hint = "two values need an operator between them, e.g. `and`, `==` or `+`"
        return self.error(f"expected {expected}, got {self.describe(token)}", token.pos, hint)

    def expression(self, min_bp: int) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(
                f"expression is nested too deeply (more than {MAX_DEPTH} levels)",
                self.peek().pos, "split it into several `filter` processors",
            )
        left = self.prefix(min_bp)
        chained: Token | None = None  # the comparison just parsed at this level, if any
        while True:
            token = self.peek()
            if token.kind not in ("op", "kw") or token.value not in _INFIX:
                break
            lbp = _INFIX[token.value]
            if lbp <= min_bp:
                break
            if lbp == _CMP and chained is not None:
                raise self.error(
                    f"comparisons cannot be chained: `{chained.value}` then `{token.value}`",
                    token.pos, "combine them with `and`, e.g. `0 < x and x < 10`",
                )
            left = self.infix(left, self.advance())
            chained = token if lbp == _CMP else None
        self.depth -= 1
        return left

    def prefix(self, min_bp: int) -> Node:
        token = self.advance()
        kind, value = token.kind, token.value
        if kind in ("num", "str"):
            return Literal(value, token.pos)
        if kind == "kw" and value in ("true", "false", "null"):
            return Literal({"true": True, "false": False, "null": None}[value], token.pos)
        if kind == "name":
            nxt = self.peek()
            if self.is_op(nxt, "("):
                raise self.error(
                    f"function calls are not supported: `{value}(...)`", token.pos,
                    "use columns, literals and the operators == != < <= > >= + - * / % "
                    "and or not in is",
                )
            return Column(value, token.pos)
        if kind == "qname":
            return Column(value, token.pos)
        if self.is_op(token, "("):
            inner = self.expression(0)
            closing = self.peek()
            if not self.is_op(closing, ")"):
                raise self.unexpected_after_value(closing, "`)` or an operator")
            self.advance()
            return inner
        if self.is_op(token, "-"):
            operand = self.expression(_UNARY)
            if isinstance(operand, Literal) and isinstance(operand.value, int | float) \
                    and not isinstance(operand.value, bool):
                return Literal(-operand.value, token.pos)
            return Unary("-", operand, token.pos)
        if self.is_op(token, "not"):
            if min_bp > _NOT:
                raise self.error(
                    "`not` must be in parentheses here", token.pos,
                    "e.g. `a == (not b)`",
                )
            return Unary("not", self.expression(_NOT), token.pos)
        previous = self.tokens[self.i - 2] if self.i >= 2 else None
        after = f" after `{previous.value}`" if previous and previous.kind in ("op", "kw") else ""
        hint = "a value is a column, a number, a string, true, false, null or `(...)`"
        if self.is_op(token, "+"):
            hint = "there is no unary `+`; write the number alone"
        elif self.is_op(token, "*") and previous is not None and self.is_op(previous, "*"):
            hint = "there is no `**` (power) operator"
        elif self.is_op(token, "in", "is", "and", "or"):
            hint = f"`{value}` goes between two values, e.g. `x {value} ...`"
        raise self.error(f"expected a value{after}, got {self.describe(token)}", token.pos, hint)

    def infix(self, left: Node, token: Token) -> Node:
        op = token.value
        if op in ("and", "or"):
            right = self.expression(_INFIX[op])
            operands: list[Node] = []
            for side in (left, right):
                if isinstance(side, BoolOp) and side.op == op:
                    operands.extend(side.operands)
                else:
                    operands.append(side)
            pos = left.pos if isinstance(left, BoolOp) and left.op == op else token.pos
            return BoolOp(op, tuple(operands), pos)
        if op == "is":
            negated = False
            if self.is_op(self.peek(), "not"):
                self.advance()
                negated = True
            target = self.advance()
            if not self.is_op(target, "null"):
                raise self.error(
                    f"expected `null` after `is{' not' if negated else ''}`, "
                    f"got {self.describe(target)}",
                    target.pos, "`is` only tests for null: `x is null`, `x is not null`",
                )
            return IsNull(left, negated, token.pos)
        if op == "not":
            nxt = self.advance()
            if not self.is_op(nxt, "in"):
                raise self.error(
                    f"expected `in` after `not`, got {self.describe(nxt)}", nxt.pos,
                    "`not` goes before a condition (`not a`) or before `in` (`x not in (1, 2)`)",
                )
            return In(left, self.items(), True, token.pos)
        if op == "in":
            return In(left, self.items(), False, token.pos)
        return Binary(op, left, self.expression(_INFIX[op]), token.pos)

    def items(self) -> tuple[Node, ...]:
        opening = self.advance()
        if not self.is_op(opening, "(", "["):
            raise self.error(
                f"expected `(` after `in`, got {self.describe(opening)}", opening.pos,
                "e.g. `x in (1, 2, 3)`",
            )
        closer = ")" if opening.value == "(" else "]"
        items: list[Node] = []
        while True:
            if self.is_op(self.peek(), closer):
                if not items:
                    raise self.error(
                        f"expected at least one value in the list, got `{closer}`",
                        self.peek().pos, "e.g. `x in (1, 2, 3)`",
                    )
                break
            items.append(self.expression(_CMP))
            sep = self.peek()
            if self.is_op(sep, ","):
                self.advance()
                continue
            if not self.is_op(sep, closer):
                raise self.unexpected_after_value(sep, f"`,` or `{closer}`")
        self.advance()
        return tuple(items)


def parse(text: str) -> Node:
    """Parse a filter expression into its AST; raise `FilterSyntaxError` if it is invalid."""
    if not isinstance(text, str):
        raise FilterSyntaxError(
            f"a filter expression is a string, got {type(text).__name__}",
            expression="", position=0, hint="quote the expression in YAML",
        )
    if len(text) > MAX_LENGTH:
        raise FilterSyntaxError(
            f"expression is too long ({len(text):,} characters; the limit is {MAX_LENGTH:,})",
            expression=text, position=MAX_LENGTH,
            hint="split it into several `filter` processors",
        )
    bad = _SURROGATE.search(text)
    if bad:
        raise FilterSyntaxError(
            "invalid character (a lone surrogate)", expression=text, position=bad.start()
        )
    node = _Parser(text).parse()
    _check_depth(node, text)
    _check_kinds(node, text, root=True)
    return node


def _check_depth(node: Node, text: str) -> None:
    """Left-associative chains (a + b + c ...) nest without parser recursion: bound them too."""
    stack = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise FilterSyntaxError(
                f"expression is nested too deeply (more than {MAX_DEPTH} levels)",
                expression=text, position=current.pos,
                hint="split it into several `filter` processors, or use `x in (...)` "
                "for long lists",
            )
        stack.extend((child, depth + 1) for child in children(current))


# ---------------------------------------------------------------- static check

# Static kinds: "bool", "num", "str", "null" (a null literal), "any" (a column or unknown).
_KIND_WORDS = {"bool": "a boolean", "num": "a number", "str": "a string", "null": "null"}


def _literal_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "num"
    return "str"


def _check_kinds(node: Node, text: str, *, root: bool = False) -> str:
    """Reject what is wrong whatever the table: `1 and x`, `'a' + 1`, `x == null`, ..."""

    def fail(problem: str, pos: int, hint: str | None = None) -> FilterSyntaxError:
        return FilterSyntaxError(problem, expression=text, position=pos, hint=hint)

    kind = _node_kind(node, text, fail)
    if root and kind in ("num", "str"):
        start = len(text) - len(text.lstrip())
        raise fail(
            f"a filter must be a condition, but this expression is {_KIND_WORDS[kind]}",
            start, "compare it, e.g. `x > 0`",
        )
    return kind


def _node_kind(node: Node, text: str, fail: Any) -> str:
    if isinstance(node, Literal):
        if isinstance(node.value, int) and not isinstance(node.value, bool):
            if not _INT_MIN <= node.value <= _INT_MAX:
                raise fail("integer is too large (the limit is 64 bits)", node.pos,
                           "write a float instead, e.g. 1e20")
        return _literal_kind(node.value)
    if isinstance(node, Column):
        return "any"
    if isinstance(node, IsNull):
        _node_kind(node.operand, text, fail)
        return "bool"
    if isinstance(node, BoolOp) or (isinstance(node, Unary) and node.op == "not"):
        operands = node.operands if isinstance(node, BoolOp) else (node.operand,)
        for operand in operands:
            kind = _node_kind(operand, text, fail)
            if kind in ("num", "str"):
                problem = (
                    f"`{node.op}` needs conditions, but one side is {_KIND_WORDS[kind]}"
                    if isinstance(node, BoolOp)
                    else f"`not` needs a condition, got {_KIND_WORDS[kind]}"
                )
                raise fail(problem, node.pos, "compare it, e.g. `x > 0`")
        return "bool"
    if isinstance(node, Unary):  # unary minus
        kind = _node_kind(node.operand, text, fail)
        if kind not in ("num", "any"):
            raise fail(f"`-` needs a number, got {_KIND_WORDS[kind]}", node.pos)
        return "num"
    if isinstance(node, Binary):
        left = _node_kind(node.left, text, fail)
        right = _node_kind(node.right, text, fail)
        if node.op in ARITHMETIC:
            for kind in (left, right):
                if kind == "null":
                    raise fail(f"`{node.op}` with null is always null", node.pos,
                               "test for missing values with `x is null`")
                if kind in ("str", "bool"):
                    raise fail(f"`{node.op}` needs numbers, but one side is {_KIND_WORDS[kind]}",
                               node.pos)
            return "num"
        if "null" in (left, right):
            word = "is null" if node.op == "==" else "is not null"
            raise fail(f"`{node.op} null` is never true (a comparison with null is null)",
                       node.pos, f"write `x {word}`")
        _check_comparable(left, right, node.op, node.pos, fail)
        return "bool"
    if isinstance(node, In):
        operand_kind = _node_kind(node.operand, text, fail)
        if operand_kind == "null":
            raise fail("`null in (...)` is never true", node.pos, "write `x is null`")
        first: str | None = None  # the first known kind among the items
        for item in node.items:
            kind = _node_kind(item, text, fail)
            if kind == "null":
                raise fail("null in an `in` list never matches", item.pos,
                           "add `or x is null` to keep missing values")
            _check_comparable(operand_kind, kind, "in", item.pos, fail)
            if kind != "any":
                if first is not None and kind != first:
                    raise fail(f"the list mixes {_KIND_WORDS[first]} and {_KIND_WORDS[kind]}",
                               item.pos)
                first = kind
        return "bool"
    raise AssertionError(f"unknown node {node!r}")  # pragma: no cover


def _check_comparable(left: str, right: str, op: str, pos: int, fail: Any) -> None:
    if "any" in (left, right) or left == right:
        return
    raise fail(f"cannot compare {_KIND_WORDS[left]} with {_KIND_WORDS[right]} (`{op}`)", pos)


# ---------------------------------------------------------------- compile


def _is_plain_name(name: str) -> bool:
    return (
        bool(name)
        and (name[0] == "_" or name[0].isalpha())
        and all(c == "_" or c.isalnum() for c in name)
        and name.lower() not in KEYWORDS
    )


def check_columns(node: Node, columns: Sequence[str], text: str = "") -> None:
    """Raise `UnknownColumnError` for the first column the expression names that is missing."""
    known = set(columns)
    for n in walk(node):
        if isinstance(n, Column) and n.name not in known:
            raise UnknownColumnError(
                n.name, expression=text, position=n.pos,
                suggestion=suggest_column(n.name, columns), columns=list(columns),
            )


def compile_filter(
    text: str, columns: Sequence[str], *, schema: pa.Schema | None = None
) -> pc.Expression:
    """Parse `text`, check its columns against `columns`, and build a pyarrow Expression.

    `table.filter(expr)` keeps the rows where it is true (null → dropped). With the
    table's `schema`, arithmetic on narrow integer columns is done in 64 bits (see
    `to_expression`).
    """
    node = parse(text)
    check_columns(node, list(columns), text)
    return to_expression(node, schema=schema)


def to_expression(node: Node, *, schema: pa.Schema | None = None) -> pc.Expression:
    """Translate a parsed (and checked) AST to a `pyarrow.compute.Expression`.

    Arrow computes `int8_column * 100` in int8 (it narrows the literal to the column's
    type) and so overflows where Python would not; given the table's `schema`, integer
    columns narrower than 64 bits are widened to int64 where they meet arithmetic.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    narrow_ints = set()
    if schema is not None:
        narrow_ints = {
            f.name for f in schema
            if pa.types.is_integer(f.type) and f.type.bit_width < 64
        }

    def operand(n: Node) -> pc.Expression:
        """An arithmetic operand: a narrow integer column is widened to int64."""
        if isinstance(n, Column) and n.name in narrow_ints:
            return pc.field(n.name).cast(pa.int64())
        return build(n)

    def literal(value: object) -> pc.Expression:
        if value is None:  # null only reaches boolean contexts and `is null` (static check)
            return pc.scalar(pa.scalar(None, pa.bool_()))
        return pc.scalar(value)

    def balanced(fn: Any, parts: list[pc.Expression]) -> pc.Expression:
        while len(parts) > 1:  # pairwise, so a long `or` chain nests log2(n) deep
            paired = [fn(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
            parts = paired + ([parts[-1]] if len(parts) % 2 else [])
        return parts[0]

    arithmetic = {
        "+": pc.add_checked,
        "-": pc.subtract_checked,
        "*": pc.multiply_checked,
        "/": lambda a, b: pc.divide(pc.multiply(a, pc.scalar(1.0)), b),
        "%": _modulo(pc),
    }
    comparisons = {
        "==": pc.equal, "!=": pc.not_equal, "<": pc.less,
        "<=": pc.less_equal, ">": pc.greater, ">=": pc.greater_equal,
    }  # fmt: skip

    def build(n: Node) -> pc.Expression:
        if isinstance(n, Literal):
            return literal(n.value)
        if isinstance(n, Column):
            return pc.field(n.name)
        if isinstance(n, Unary):
            if n.op == "not":
                return pc.invert(build(n.operand))
            return pc.negate_checked(operand(n.operand))
        if isinstance(n, Binary):
            if n.op in arithmetic:
                return arithmetic[n.op](operand(n.left), operand(n.right))
            return comparisons[n.op](build(n.left), build(n.right))
        if isinstance(n, BoolOp):
            fn = pc.and_kleene if n.op == "and" else pc.or_kleene
            return balanced(fn, [build(o) for o in n.operands])
        if isinstance(n, IsNull):
            inner = build(n.operand)
            return pc.is_valid(inner) if n.negated else pc.is_null(inner)
        if isinstance(n, In):
            result = _membership(n, build, balanced, pa, pc)
            return pc.invert(result) if n.negated else result
        raise AssertionError(f"unknown node {n!r}")  # pragma: no cover

    return build(node)


def _membership(node: In, build: Any, balanced: Any, pa: Any, pc: Any) -> pc.Expression:
    """`x in (...)`: null when x is null (SQL), else whether x equals one of the items."""
    operand = build(node.operand)
    values = [i.value for i in node.items if isinstance(i, Literal)]
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(values) == len(node.items) and len({_literal_kind(v) for v in values}) == 1:
        if all(isinstance(v, int) for v in numbers) and len(numbers) == len(values):
            value_set = pa.array(values, pa.int64())
        elif len(numbers) == len(values):
            value_set = pa.array([float(v) for v in numbers], pa.float64())
        else:
            value_set = pa.array(values)
        found = pc.is_in(operand, value_set=value_set, skip_nulls=True)
        return pc.if_else(pc.is_valid(operand), found, pc.scalar(pa.scalar(None, pa.bool_())))
    return balanced(pc.or_kleene, [pc.equal(operand, build(i)) for i in node.items])


def _modulo(pc: Any) -> Any:
    try:
        pc.get_function("modulo")
    except KeyError:  # older pyarrow has no modulo (ArrowKeyError): floor modulo via floats
        def modulo(a: pc.Expression, b: pc.Expression) -> pc.Expression:
            q = pc.floor(pc.divide(pc.multiply(a, pc.scalar(1.0)), b))
            return pc.subtract(a, pc.multiply(b, q))

        return modulo
    return pc.modulo

