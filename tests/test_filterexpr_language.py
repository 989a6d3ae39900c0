"""The filter language: what it accepts (hand-worked rows), that Python constructs outside it
are refused, and random expressions from the grammar checked row by row against a pure-Python
three-valued evaluator. Written for an `ast`-based rewrite that was measured and not merged
(issue 8 closing note); they hold for the parser in use."""

from __future__ import annotations

import math
import operator

import pyarrow as pa
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from buildtool.filterexpr import (
    Binary,
    Column,
    FilterSyntaxError,
    In,
    IsNull,
    Literal,
    compile_filter,
    parse,
)

NAN, INF = float("nan"), float("inf")
TABLE = pa.table({
    "i": pa.array([1, 2, None, -3, 10], pa.int64()),
    "n": pa.array([1, -2, 3, None, 100], pa.int8()),
    "f": pa.array([0.5, None, 2.0, NAN, -1.5], pa.float64()),
    "s": pa.array(["a", "b", None, "it's", "class"], pa.string()),
    "b": pa.array([True, False, None, True, False], pa.bool_()),
    "my col": pa.array([1, 2, 3, 4, 5], pa.int64()),
    "class": pa.array([1, 0, 1, 0, 1], pa.int64()),
    "from": pa.array(["x", "y", "x", None, "z"], pa.string()),
})


def kept(text: str, table: pa.Table = TABLE) -> list[int]:
    indexed = table.append_column("__row", pa.array(range(table.num_rows)))
    expression = compile_filter(text, table.column_names, schema=table.schema)
    return indexed.filter(expression)["__row"].to_pylist()


# (expression, the rows it keeps) — worked out by hand from TABLE above.
ACCEPTED = [
    ("i > 1", [1, 4]),
    ("i >= 2 and i <= 10", [1, 4]),
    ("i != 2", [0, 3, 4]),  # null is not != 2: dropped
    ("i == -3", [3]),
    ("-i > 2", [3]),
    ("- -i == 2", [1]),
    ("i * 2 + 1 > 4", [1, 4]),
    ("1 + i * 2 > 4", [1, 4]),
    ("(1 + i) * 2 > 4", [1, 4]),
    ("i - 1 - 1 == 0", [1]),  # left-associative
    ("i / 4 == 0.5", [1]),  # true division
    ("i % 3 == 1", [0, 4]),  # Python's modulo: 10 % 3 == 1
    ("i % 3 == 0", [3]),  # -3 % 3 == 0
    ("n * 100 > 150", [2, 4]),  # int8 arithmetic is widened, 100 * 100 does not overflow
    ("f > 0", [0, 2]),  # NaN compares false
    ("f != 0.5", [2, 3, 4]),  # NaN != 0.5 is true
    ("f < .6 and f > -1.6", [0, 4]),
    ("f == 2.", [2]),
    ("f * 1e3 == 500", [0]),
    ("f / 0 > 1e308", [0, 2]),  # float division by zero: inf; -1.5/0 is -inf, 0/0 NaN
    ("s == 'a'", [0]),
    ('s == "it\'s"', [3]),
    ("s == 'it\\'s'", [3]),
    ("s == '\\u0062'", [1]),
    ("s < 'b'", [0]),
    ("s in ('a', 'class')", [0, 4]),
    ("s not in ['a', 'b',]", [3, 4]),
    ("s in ('x', `from`)", []),
    ("b", [0, 3]),
    ("not b", [1, 4]),
    ("b == true", [0, 3]),
    ("b != FALSE", [0, 3]),
    ("b or null", [0, 3]),  # false or null is null: dropped
    ("not (b and null)", [1, 4]),
    ("true", [0, 1, 2, 3, 4]),
    ("null", []),
    ("null is null", [0, 1, 2, 3, 4]),
    ("1 is not null", [0, 1, 2, 3, 4]),
    ("i is null", [2]),
    ("f is null", [1]),  # NaN is not null
    ("s IS NOT NULL AND s != 'a'", [1, 3, 4]),
    ("(i + 1) is null or b is null", [2]),
    ("i in (1, 2, 10)", [0, 1, 4]),
    ("i in [1, 2, 10]", [0, 1, 4]),
    ("i in (10,)", [4]),
    ("i in (10)", [4]),  # one parenthesized item
    ("i in ((10))", [4]),
    ("i in (1.0, 2.5, -3)", [0, 3]),
    ("i not in (1, 2)", [3, 4]),  # null is in no list, and in no complement either
    ("i NOT IN (1, 2)", [3, 4]),
    ("i in (`my col`, 10)", [0, 1, 4]),
    ("i + 1 in (2, 3)", [0, 1]),
    ("b in (true)", [0, 3]),
    ("b in ((i > 1), false)", [1, 4]),
    ("b in ((not b), true)", [0, 3]),
    ("`my col` >= 4", [3, 4]),
    ("`class` == 1 and class == 1", [0, 2, 4]),  # a Python keyword is a column name here
    ("`from` == 'x'", [0, 2]),
    ("from == 'x' and s is not null", [0]),
    ("b or i > 2 and s == 'class'", [0, 3, 4]),  # and binds tighter than or
    ("(b or i > 2) and s == 'class'", [4]),
    ("not i == 1", [1, 3, 4]),
    ("not not b", [0, 3]),
    ("NOT i == 1 AND b", [3]),
    ("True OR i > 1", [0, 1, 2, 3, 4]),
    ("\n  i > 1\n  and\tb\n", []),
    ("i>1 and(b)or(s=='a')", [0]),
    ("(s=='a')or`my col`in(5)", [0, 4]),
    ("'a'==s", [0]),
    ("-9223372036854775808 < i", [0, 1, 3, 4]),
    ("007 == `my col` + 2", [4]),  # leading zeros are fine, as before
]


@pytest.mark.parametrize(("text", "rows"), ACCEPTED, ids=[t for t, _ in ACCEPTED])
def test_accepted_expressions_keep_the_expected_rows(text, rows):
    assert kept(text) == rows


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("if > 1", Binary(">", Column("if"), Literal(1))),
        ("lambda == yield", Binary("==", Column("lambda"), Column("yield"))),
        ("x in ((1))", In(Column("x"), (Literal(1),))),
        ("x in ((1), -(2))", In(Column("x"), (Literal(1), Literal(-2)))),
        ("null is not null", IsNull(Literal(None), True)),
        ("ﬁ == 1", Binary("==", Column("ﬁ"), Literal(1))),  # not NFKC-normalized to `fi`
    ],
)
def test_python_keywords_and_odd_names_are_columns(text, tree):
    assert parse(text) == tree


# (expression, offset of the caret, words the message holds)
REJECTED = [
    # constructs Python parses and this language does not have
    ("s.upper", 1, "attribute access"),
    ("(s).upper == 'A'", 3, "attribute access"),
    ("f(i) > 1", 0, "function calls are not supported: `f(...)`"),
    ("len(s) > 1", 0, "`len(...)`"),
    ("s.upper() == 'A'", 1, "attribute access"),
    ("s[0] == 'a'", 1, "indexing"),
    ("lambda: 1", 0, "`lambda`"),
    ("lambda x: x", 0, "`lambda`"),
    ("b == (lambda: 1)", 6, "`lambda`"),
    ("i if b else 0", 2, "conditional expressions"),
    ("(i := 1)", 3, "assignment (`:=`)"),
    ("i in (*f,)", 6, "unpacking"),
    ("{1: 2}", 0, "dictionaries"),
    ("i in {1, 2}", 5, "expected `(` after `in`, got `{`"),
    ("{1, 2}", 0, "sets"),
    ("[i for i in s]", 0, "comprehensions"),
    ("(i for i in s)", 0, "comprehensions"),
    ("await i", 0, "`await`"),
    ("(yield i)", 1, "`yield`"),
    ("...", 0, "`...`"),
    ("i, 1", 1, "can only follow `in`"),
    ("[1, 2] == i", 0, "can only follow `in`"),
    ("i ** 2 > 1", 3, "`**` (power)"),
    ("i // 2 > 1", 3, "`//` (floor division)"),
    ("i << 1 > 1", 3, "`<<` (bit shift)"),
    ("score >> 1", 7, "expected a value after `>`"),
    ("b & b", 2, "`&` is not an operator"),
    ("b | b", 2, "`|` is not an operator"),
    ("b ^ b", 2, "`^` is not an operator"),
    ("b @ b", 2, "`@` is not an operator"),
    ("~b", 0, "`~` is not an operator"),
    ("+i > 1", 0, "no unary `+`"),
    ("i < 2 < 3", 6, "comparisons cannot be chained: `<` then `<`"),
    ("i is null is null", 10, "cannot be chained"),
    ("i in (1) == b", 9, "cannot be chained"),
    # this language's own rules
    ("i is 1", 5, "expected `null` after `is`"),
    ("i is not (null)", 9, "expected `null` after `is not`"),
    ("i is null + 1", 9, "only tests for null"),
    ("i in 1", 5, "expected `(` after `in`"),
    ("i in f", 5, "expected `(` after `in`"),
    ("i in ()", 6, "at least one value"),
    ("i in ((1, 2))", 5, "expected a list"),
    ("i in (1) + (2)", 5, "expected a list"),
    ("i in ([1, 2])", 5, "expected a list"),
    ("b in (i > 1, true)", 8, "needs parentheses"),
    ("b in (not b)", 6, "`not` must be in parentheses"),
    ("b == not b", 5, "`not` must be in parentheses"),
    ("i not 1", 6, "expected `in` after `not`"),
    ("i == null", 2, "never true"),
    ("i + 'a' > 1", 2, "needs numbers"),
    ("1 + 2", 0, "must be a condition"),
    ("i = 1", 2, "`=` is not an operator"),
    ("i && b", 2, "`&&`"),
    ("i || b", 2, "`||`"),
    ("!b", 0, "`!`"),
    ("i > 1; b", 5, "`;`"),
    ("i > 1 # comment", 6, "unexpected character `#`"),
    ("i > 1 \\\n and b", 6, "unexpected character `\\`"),
    ("0x10 > i", 0, "invalid number"),
    ("1_000 > i", 0, "invalid number"),
    ("1j > i", 0, "invalid number"),
    ("x.5 > 1", 1, "got number `.5`"),
    ("r'x' == s", 1, "got string 'x'"),
    ("f'x' == s", 1, "got string 'x'"),
    ("b'x' == s", 1, "got string 'x'"),
    ("'a' 'b' == s", 4, "got string 'b'"),
    ("'''a''' == s", 2, "got string 'a'"),
    ("'\\x41' == s", 1, "unknown escape"),
    ("'\\ud800' == s", 1, "lone surrogate"),
    ("9223372036854775808 > i", 0, "too large"),
    ("i > ) and (", 4, "expected a value after `>`, got `)`"),
    ("(i > 1", 6, "expected `)` or an operator, got the end"),
    ("i > 1)", 5, "got `)`"),
    ("i > 1 and", 9, "expected a value after `and`, got the end"),
    ("i > 1\n and s ==\n", 15, "after `==`, got the end"),
    ("i > ) 'unterminated", 4, "expected a value after `>`"),  # the first problem wins
    ("`` == 1", 0, "empty column name"),
    ("", 0, "empty expression"),
]


@pytest.mark.parametrize(("text", "position", "words"), REJECTED, ids=[t for t, _, _ in REJECTED])
def test_python_constructs_outside_the_language_are_refused(text, position, words):
    with pytest.raises(FilterSyntaxError) as caught:
        compile_filter(text, TABLE.column_names)
    assert caught.value.position is not None  # the message points into the expression


@pytest.mark.xfail(strict=True, reason="pyarrow's is_in hashes -0.0 apart from 0.0; `==` does "
                   "not. As before the ast rewrite: left alone, reported.")
def test_negative_zero_in_a_list_is_zero():
    table = pa.table({"f": [0.0, -0.0]})
    assert kept("f in (0, 1)", table) == kept("f == 0 or f == 1", table) == [0, 1]


# ---------------------------------------------------------------- random expressions

COLUMN_TYPES = {"i": "num", "n": "num", "f": "num", "my col": "num", "class": "num",
                "s": "str", "from": "str", "b": "bool"}
FLOATS = [0.0, -0.0, 0.5, -2.25, 3.0, 7.5, NAN, INF, -INF]
STRINGS = ["", "a", "B", "it's", 'q"uote', "back`tick", "é", "a\nb", "tab\there", "\\"]
PRECEDENCE = {"or": 1, "and": 2, "not": 3, "cmp": 4, "in": 4, "is": 4, "+": 5, "-": 5,
              "*": 6, "/": 6, "%": 6, "neg": 7, "atom": 8}


@st.composite
def tables(draw):
    rows = draw(st.integers(1, 8))

    def column(values, type_):  # about one value in four is null
        value = st.one_of(st.none(), *[st.sampled_from(values)] * 3)
        return pa.array(draw(st.lists(value, min_size=rows, max_size=rows)), type_)

    ints = range(-20, 21)
    return pa.table({
        "i": column(ints, pa.int64()), "n": column(ints, pa.int8()),
        "f": column(FLOATS, pa.float64()), "my col": column(FLOATS, pa.float64()),
        "class": column(ints, pa.int64()), "s": column(STRINGS, pa.string()),
        "from": column(STRINGS, pa.string()), "b": column([True, False], pa.bool_()),
    })


def literals(kind):
    """A literal of `kind` as (tree, text), in one of the spellings the language takes."""
    if kind == "num":
        ints = st.integers(-20, 20).flatmap(lambda v: st.sampled_from(
            [(v, str(v)), (v, f"{'-' if v < 0 else ''}00{abs(v)}")]))
        floats = st.sampled_from([(0.5, ".5"), (2.0, "2."), (1000.0, "1e3"), (-0.0, "-0.0"),
                                  (0.25, "2.5E-1"), (INF, "1e999"), (-2.25, "-2.25")])
        return st.one_of(ints, floats).map(lambda p: (("lit", p[0]), p[1]))
    if kind == "str":
        return st.sampled_from(STRINGS).flatmap(lambda v: st.sampled_from(["'", '"']).map(
            lambda q: (("lit", v), q + _escape(v, q) + q)))
    return st.sampled_from([True, False]).flatmap(lambda v: st.sampled_from(
        [str(v).lower(), str(v).upper(), str(v)]).map(lambda t: (("lit", v), t)))


def _escape(value: str, quote: str) -> str:
    table = {"\\": "\\\\", quote: "\\" + quote, "\n": "\\n", "\t": "\\t", "`": "\\`"}
    return "".join(table.get(ch, ch) for ch in value)


def columns(kind):
    """A column of `kind` as (tree, text); any name may be backticked, `my col` must be."""
    names = [name for name, k in COLUMN_TYPES.items() if k == kind]
    return st.sampled_from(names).flatmap(lambda name: st.sampled_from(
        [f"`{name}`", f"`{name}`" if " " in name else name]).map(lambda t: (("col", name), t)))


@st.composite
def expressions(draw, kind, depth, null=True):
    """(tree, text, precedence of the text's outermost operator) for an expression of `kind`;
    `null` allows a bare null literal (not where the static check rejects it: `x == null`)."""
    leaves = st.one_of(columns(kind), literals(kind)).map(lambda p: (*p, PRECEDENCE["atom"]))
    if depth == 0 or draw(st.integers(0, 5)) == 0:
        if kind == "bool" and null and draw(st.integers(0, 7)) == 0:
            return ("lit", None), draw(st.sampled_from(["null", "NULL", "Null"])), 8
        tree, text, prec = draw(leaves)
        if tree[0] == "lit" and isinstance(tree[1], int | float) and text.startswith("-"):
            prec = PRECEDENCE["neg"]
        return tree, text, prec
    sub = lambda k, null=True: expressions(k, depth - 1, null)  # noqa: E731
    if kind == "num":
        op = draw(st.sampled_from(["+", "-", "*", "/", "%", "neg"]))
        if op == "neg":
            tree, text, prec = draw(sub("num"))
            return ("neg", tree), "-" + _wrap(draw, text, prec, PRECEDENCE["neg"]), 7
        left, right = draw(sub("num")), draw(sub("num"))
        if op == "%":  # by a literal that is not zero: `%` by zero fails (`/` gives inf/NaN)
            value = draw(st.sampled_from([1, 2, 3, -4, 2.5, -0.5]))
            right = (("lit", value), str(value), 8 if value > 0 else 7)
        return _binary(draw, op, op, left, right)
    if kind == "str":
        return draw(leaves)
    shape = draw(st.sampled_from(["and", "or", "not", "cmp", "cmp", "cmp", "in", "in", "is"]))
    if shape in ("and", "or"):
        parts = [draw(sub("bool")) for _ in range(draw(st.integers(2, 3)))]
        word = draw(st.sampled_from([shape, shape.upper()]))
        texts = [_wrap(draw, t, p, PRECEDENCE[shape] + 1) for _, t, p in parts]
        return (shape, [t for t, _, _ in parts]), f" {word} ".join(texts), PRECEDENCE[shape]
    if shape == "not":
        tree, text, prec = draw(sub("bool"))
        return ("not", tree), "not " + _wrap(draw, text, prec, PRECEDENCE["not"]), 3
    operand_kind = draw(st.sampled_from(["num", "str", "bool"]))
    if shape == "cmp":
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        left, right = draw(sub(operand_kind, False)), draw(sub(operand_kind, False))
        return _binary(draw, op, "cmp", left, right)
    tree, text, prec = draw(sub(operand_kind, shape == "is"))
    text = _wrap(draw, text, prec, PRECEDENCE["cmp"] + 1)
    if shape == "is":
        negated = draw(st.booleans())
        return ("isnull", tree, negated), f"{text} is {'not ' if negated else ''}null", 4
    items = [draw(sub(operand_kind, False)) for _ in range(draw(st.integers(1, 3)))]
    negated = draw(st.booleans())
    shown = ", ".join(_wrap(draw, t, p, PRECEDENCE["cmp"] + 1) for _, t, p in items)
    opener, closer = draw(st.sampled_from(["()", "[]"]))
    comma = "," if len(items) == 1 and opener == "(" and draw(st.booleans()) else ""
    return (("in", tree, [t for t, _, _ in items], negated),
            f"{text} {'not in' if negated else 'in'} {opener}{shown}{comma}{closer}", 4)


def _wrap(draw, text, prec, needed):
    """`text` in parentheses when its operator binds looser than `needed`, and sometimes anyway."""
    return f"({text})" if prec < needed or draw(st.integers(0, 9)) == 0 else text


def _binary(draw, op, level, left, right):
    need = PRECEDENCE[level]
    # left-associative: the right operand needs a tighter operator (floats do not associate)
    text = f"{_wrap(draw, left[1], left[2], need)} {op} {_wrap(draw, right[1], right[2], need + 1)}"
    if level == "cmp":  # comparisons do not chain: both sides bind tighter
        text = f"{_wrap(draw, left[1], left[2], need + 1)} {op} {_wrap(draw, right[1], right[2], need + 1)}"
    return ("cmp" if level == "cmp" else "arith", op, left[0], right[0]), text, need


# ---- the reference: SQL three-valued logic in plain Python, None is null/unknown

_INT64 = range(-(2**63), 2**63)
_COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
            ">": operator.gt, ">=": operator.ge}


class Overflow(Exception):
    pass


class SignedZero(Exception):
    """A float zero meets `in`, where pyarrow may tell -0.0 from 0.0 (see the xfail above)."""


def _divide(a, b):
    if b == 0:  # IEEE, as pyarrow: x/0 is ±inf, 0/0 and nan/0 are NaN
        if a == 0 or math.isnan(a):
            return NAN
        return math.copysign(INF, a) * math.copysign(1.0, b)
    return a / b


def _arith(op, a, b):
    if a is None or b is None:
        return None
    if op == "/":
        return _divide(float(a), float(b))
    result = {"+": operator.add, "-": operator.sub, "*": operator.mul, "%": operator.mod}[op](a, b)
    if isinstance(result, int) and result not in _INT64:
        raise Overflow
    return result


def evaluate(tree, row):
    kind = tree[0]
    if kind == "lit":
        return tree[1]
    if kind == "col":
        return row[tree[1]]
    if kind == "neg":
        value = evaluate(tree[1], row)
        return None if value is None else -value
    if kind == "arith":
        return _arith(tree[1], evaluate(tree[2], row), evaluate(tree[3], row))
    if kind == "cmp":
        a, b = evaluate(tree[2], row), evaluate(tree[3], row)
        return None if a is None or b is None else _COMPARE[tree[1]](a, b)
    if kind == "not":
        value = evaluate(tree[1], row)
        return None if value is None else not value
    if kind in ("and", "or"):
        values = [evaluate(t, row) for t in tree[1]]
        decisive = kind == "or"  # True decides an `or`, False an `and`
        if decisive in values:
            return decisive
        return None if None in values else not decisive
    if kind == "isnull":
        return (evaluate(tree[1], row) is None) != tree[2]
    if kind == "in":
        value, items = evaluate(tree[1], row), [evaluate(t, row) for t in tree[2]]
        if any(isinstance(v, float) and v == 0 for v in (value, *items)):
            raise SignedZero
        matches = [None if value is None or item is None else value == item for item in items]
        found = True if True in matches else (None if None in matches else False)
        return None if found is None else found != tree[3]
    raise AssertionError(tree)


@settings(max_examples=500, deadline=None)
@given(tables(), st.integers(1, 4).flatmap(lambda d: expressions("bool", d)))
def test_random_expressions_match_the_reference_row_by_row(table, expression):
    tree, text, _ = expression
    rows = table.to_pylist()
    try:
        expected = [n for n, row in enumerate(rows) if evaluate(tree, row) is True]
    except Overflow:
        with pytest.raises(pa.ArrowInvalid, match="overflow"):
            kept(text, table)
        return
    except SignedZero:
        reject()
    try:
        got = kept(text, table)
    except FilterSyntaxError as err:
        # the static check rejects a comparison or list of literals of two kinds, and
        # arithmetic or `-` on a boolean literal; the generator makes neither
        raise AssertionError(f"{text!r} rejected: {err}") from None
    assert got == expected, text
