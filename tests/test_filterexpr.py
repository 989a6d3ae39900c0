"""The filter expression language: results against plain-Python predicates, and hostile input."""

from __future__ import annotations

import math
import operator

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildtool.errors import WorkflowError
from buildtool.filterexpr import (
    MAX_DEPTH,
    MAX_LENGTH,
    Binary,
    BoolOp,
    Column,
    FilterSyntaxError,
    In,
    IsNull,
    Literal,
    Unary,
    UnknownColumnError,
    columns_used,
    compile_filter,
    parse,
)

NAN = float("nan")
DATA = {
    "i": [1, 2, 3, None, 5, -4, 0, 7],
    "f": [1.5, None, -2.0, 3.25, 0.0, 10.0, NAN, 2.0],
    "s": ["a", "b", None, "hello world", "", "B", "it's", "a\nb"],
    "b": [True, False, None, True, False, True, None, False],
    "my col": [10, 20, 30, 40, None, 60, 70, 80],
    "in": [1, 0, 1, 0, 1, 0, 1, 0],
}
COLUMNS = list(DATA)
TABLE = pa.table(DATA)
ROWS = TABLE.to_pylist()


# SQL three-valued logic in plain Python: None is "unknown".
def _cmp(op):
    return lambda a, b: None if a is None or b is None else op(a, b)


EQ, NE, LT, LE, GT, GE = (_cmp(o) for o in (operator.eq, operator.ne, operator.lt,
                                            operator.le, operator.gt, operator.ge))
ADD, SUB, MUL = (_cmp(o) for o in (operator.add, operator.sub, operator.mul))
DIV = _cmp(operator.truediv)
MOD = _cmp(operator.mod)


def AND(*xs):  # noqa: N802
    if any(x is False for x in xs):
        return False
    return None if any(x is None for x in xs) else True


def OR(*xs):  # noqa: N802
    if any(x is True for x in xs):
        return True
    return None if any(x is None for x in xs) else False


def NOT(x):  # noqa: N802
    return None if x is None else not x


def IN(x, values):  # noqa: N802
    return OR(*(EQ(x, v) for v in values))


def NEG(x):  # noqa: N802
    return None if x is None else -x


VALID = [
    # comparisons on ints, floats (NaN compares false, != true), strings, bools
    ("i > 2", lambda r: GT(r["i"], 2)),
    ("i >= 2", lambda r: GE(r["i"], 2)),
    ("i < 2", lambda r: LT(r["i"], 2)),
    ("i <= 2", lambda r: LE(r["i"], 2)),
    ("i == 5", lambda r: EQ(r["i"], 5)),
    ("i != 5", lambda r: NE(r["i"], 5)),
    ("2 < i", lambda r: LT(2, r["i"])),
    ("f > 1", lambda r: GT(r["f"], 1)),
    ("f <= 0", lambda r: LE(r["f"], 0)),
    ("f != 0", lambda r: NE(r["f"], 0)),
    ("f == 3.25", lambda r: EQ(r["f"], 3.25)),
    ("f > -2.5e0", lambda r: GT(r["f"], -2.5)),
    ("f < .5", lambda r: LT(r["f"], 0.5)),
    ("i + f > 3", lambda r: GT(ADD(r["i"], r["f"]), 3)),
    ("s == 'a'", lambda r: EQ(r["s"], "a")),
    ('s == "B"', lambda r: EQ(r["s"], "B")),
    ("s != 'a'", lambda r: NE(r["s"], "a")),
    ("s < 'b'", lambda r: LT(r["s"], "b")),
    ("s == ''", lambda r: EQ(r["s"], "")),
    ("s == 'it\\'s'", lambda r: EQ(r["s"], "it's")),
    ('s == "it\'s"', lambda r: EQ(r["s"], "it's")),
    ("s == 'a\\nb'", lambda r: EQ(r["s"], "a\nb")),
    ("s == 'hello world'", lambda r: EQ(r["s"], "hello world")),
    ("s == '\\u0042'", lambda r: EQ(r["s"], "B")),
    ("b", lambda r: r["b"]),
    ("not b", lambda r: NOT(r["b"])),
    ("b == true", lambda r: EQ(r["b"], True)),
    ("b != false", lambda r: NE(r["b"], False)),
    # null tests
    ("i is null", lambda r: r["i"] is None),
    ("i is not null", lambda r: r["i"] is not None),
    ("f is null", lambda r: r["f"] is None),  # NaN is not null
    ("s is not null and s != 'a'", lambda r: AND(r["s"] is not None, NE(r["s"], "a"))),
    ("i is null or i != 1", lambda r: OR(r["i"] is None, NE(r["i"], 1))),
    # in / not in (null never satisfies either)
    ("i in (1, 2, 3)", lambda r: IN(r["i"], (1, 2, 3))),
    ("i in [1, 2, 3,]", lambda r: IN(r["i"], (1, 2, 3))),
    ("i not in (1, 2)", lambda r: NOT(IN(r["i"], (1, 2)))),
    ("i in (1.0, 2.5, -4)", lambda r: IN(r["i"], (1.0, 2.5, -4))),
    ("s in ('a', 'B', '')", lambda r: IN(r["s"], ("a", "B", ""))),
    ("s not in ('a',)", lambda r: NOT(IN(r["s"], ("a",)))),
    ("b in (true)", lambda r: IN(r["b"], (True,))),
    ("i in (f, 2)", lambda r: IN(r["i"], (r["f"], 2))),
    ("i not in (f, 5)", lambda r: NOT(IN(r["i"], (r["f"], 5)))),
    ("i + 1 in (2, 3)", lambda r: IN(ADD(r["i"], 1), (2, 3))),
    # precedence
    ("b or i > 2 and s == 'B'", lambda r: OR(r["b"], AND(GT(r["i"], 2), EQ(r["s"], "B")))),
    ("(b or i > 2) and s == 'B'", lambda r: AND(OR(r["b"], GT(r["i"], 2)), EQ(r["s"], "B"))),
    ("i > 1 and i < 5 or s == 'B'", lambda r: OR(AND(GT(r["i"], 1), LT(r["i"], 5)), EQ(r["s"], "B"))),
    ("not i == 1", lambda r: NOT(EQ(r["i"], 1))),
    ("not i == 1 and b", lambda r: AND(NOT(EQ(r["i"], 1)), r["b"])),
    ("not (i == 1 and b)", lambda r: NOT(AND(EQ(r["i"], 1), r["b"]))),
    ("not not b", lambda r: NOT(NOT(r["b"]))),
    ("b and not i in (1, 2)", lambda r: AND(r["b"], NOT(IN(r["i"], (1, 2))))),
    ("i * 2 + 1 > 5", lambda r: GT(ADD(MUL(r["i"], 2), 1), 5)),
    ("1 + i * 2 > 5", lambda r: GT(ADD(1, MUL(r["i"], 2)), 5)),
    ("(1 + i) * 2 > 5", lambda r: GT(MUL(ADD(1, r["i"]), 2), 5)),
    ("i - 1 - 1 > 0", lambda r: GT(SUB(SUB(r["i"], 1), 1), 0)),
    ("10 - i * 2 >= 3", lambda r: GE(SUB(10, MUL(r["i"], 2)), 3)),
    ("-i > 0", lambda r: GT(NEG(r["i"]), 0)),
    ("- -i > 0", lambda r: GT(NEG(NEG(r["i"])), 0)),
    ("-i * 2 < -3", lambda r: LT(MUL(NEG(r["i"]), 2), -3)),
    ("i > -5 and -i < 5", lambda r: AND(GT(r["i"], -5), LT(NEG(r["i"]), 5))),
    # true division, Python's modulo
    ("i / 2 > 1.2", lambda r: GT(DIV(r["i"], 2), 1.2)),
    ("i / 2 == 1.5", lambda r: EQ(DIV(r["i"], 2), 1.5)),
    ("i % 2 == 1", lambda r: EQ(MOD(r["i"], 2), 1)),
    ("i % 3 == 2", lambda r: EQ(MOD(r["i"], 3), 2)),
    ("f * 2 % 3 > 1", lambda r: GT(MOD(MUL(r["f"], 2), 3), 1)),
    # backticked names, a keyword as a column name, case-insensitive keywords
    ("`my col` >= 30", lambda r: GE(r["my col"], 30)),
    ("`in` == 1 AND `my col` > 20", lambda r: AND(EQ(r["in"], 1), GT(r["my col"], 20))),
    ("NOT i == 1 AND s IS NOT NULL", lambda r: AND(NOT(EQ(r["i"], 1)), r["s"] is not None)),
    ("True OR i > 1", lambda r: True),
    # constants and whitespace
    ("true", lambda r: True),
    ("false", lambda r: False),
    ("null", lambda r: None),
    ("1 == 1", lambda r: True),
    ("b or null", lambda r: OR(r["b"], None)),
    ("\n  i > 1\n  and b\n", lambda r: AND(GT(r["i"], 1), r["b"])),
]


def _selected(text: str) -> list[int]:
    indexed = TABLE.append_column("__row", pa.array(range(TABLE.num_rows)))
    return indexed.filter(compile_filter(text, COLUMNS, schema=TABLE.schema))["__row"].to_pylist()


@pytest.mark.parametrize(("text", "predicate"), VALID, ids=[t for t, _ in VALID])
def test_matches_python_predicate(text, predicate):
    expected = [n for n, row in enumerate(ROWS) if predicate(row) is True]
    assert _selected(text) == expected


def test_division_by_zero_follows_floats():
    # 1/0 = inf, -4/0 = -inf, 0/0 = NaN (not > 100), null stays null
    assert _selected("i / 0 > 100") == [0, 1, 2, 4, 7]


def test_long_or_chain_is_flat_not_deep():
    text = " or ".join(f"i == {n}" for n in range(600))
    assert len(text) < MAX_LENGTH
    node = parse(text)
    assert isinstance(node, BoolOp) and len(node.operands) == 600
    assert _selected(text) == [0, 1, 2, 4, 6, 7]


def test_narrow_integer_arithmetic_does_not_overflow():
    table = pa.table({"x": pa.array([1, 2, 100], pa.int8())})
    result = table.filter(compile_filter("x * 100 > 150", ["x"], schema=table.schema))
    assert result["x"].to_pylist() == [2, 100]


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("a or b and c", BoolOp("or", (Column("a"), BoolOp("and", (Column("b"), Column("c")))))),
        ("a and b or c", BoolOp("or", (BoolOp("and", (Column("a"), Column("b"))), Column("c")))),
        ("a and b and c", BoolOp("and", (Column("a"), Column("b"), Column("c")))),
        ("not a == 1", Unary("not", Binary("==", Column("a"), Literal(1)))),
        ("not a and b", BoolOp("and", (Unary("not", Column("a")), Column("b")))),
        (
            "x * 2 + 1 > 5",
            Binary(">", Binary("+", Binary("*", Column("x"), Literal(2)), Literal(1)), Literal(5)),
        ),
        (
            "a - b - c > 0",
            Binary(">", Binary("-", Binary("-", Column("a"), Column("b")), Column("c")), Literal(0)),
        ),
        ("x > -3", Binary(">", Column("x"), Literal(-3))),
        ("-x * 2 > 0", Binary(">", Binary("*", Unary("-", Column("x")), Literal(2)), Literal(0))),
        ("x not in (1, 2 )", In(Column("x"), (Literal(1), Literal(2)), True)),
        ("x is not null", IsNull(Column("x"), True)),
        ("`a b` == \"q\"", Binary("==", Column("a b"), Literal("q"))),
        ("((x))", Column("x")),
        ("-9223372036854775808 < x", Binary("<", Literal(-(2**63)), Column("x"))),
    ],
)
def test_parse_tree(text, tree):
    assert parse(text) == tree


def test_columns_used():
    node = parse("a > 1 and (`b c` in (d, 2) or e is null) and not f")
    assert columns_used(node) == {"a", "b c", "d", "e", "f"}
    assert columns_used(parse("1 == 1")) == set()


# ---------------------------------------------------------------- invalid and hostile input

HOSTILE = [
    "(i > 1",
    "i > 1)",
    "((i > 1)",
    "i > (1",
    "i > 1 garbage",
    "i > 1 2",
    "__import__('os')",
    "__import__('os').system('touch PWNED')",
    "s.upper() == 'A'",
    "a.b",
    "f(x)",
    "len(s) > 1",
    "lambda: 1",
    "lambda x: x",
    "i > 1; i < 2",
    "i > 1 and " * 1200 + "true",
    "(" * 10_000 + "i" + ")" * 10_000,
    "(" * 150 + "i > 1" + ")" * 150,
    "not " * 200 + "b",
    "-" * 5_000 + "i > 0",
    "i + " * 150 + "1 > 0",
    "'unterminated",
    '"unterminated',
    "`unterminated",
    "s == 'abc\\",
    "nosuch > 1",
    "",
    "   \n\t ",
    "in",
    "i in",
    "i in 1",
    "i in ()",
    "i in (1, 2",
    "i not 1",
    "i is 1",
    "i is not",
    "i == null",
    "null in (1)",
    "i in (1, null)",
    "i + null > 1",
    "1 + 'a' > 0",
    "'a' < 1",
    "i = 1",
    "i && b",
    "i || b",
    "!b",
    "i ** 2 > 1",
    "+i > 1",
    "[i for i in s]",
    "{'a': 1}",
    "i > 1 if b else 0",
    "'\\q' == s",
    "'\\u12' == s",
    "'\\ud800' == s",
    "99999999999999999999 > i",
    "9223372036854775808 > i",
    "i < 2 < 3",
    "i == 1 == b",
    "i is null is null",
    "`` == 1",
    "i > 1 and",
    "or i > 1",
    "$i > 1",
    "@x",
    "i > 1 # comment",
    "\x00",
    "b == not b",
    "1 + 2",
    "'abc'",
    "i in (1, 'a')",
    "import os",
    "exec('1')",
    "i >= 1 and getattr(s, 'x')",
    "0x10 > i",
    "1e > i",
    "1_000 > i",
    "None",
    "é > 1",
    "i > 1\n  and\n  (",
    "1 and b",
    "not 'x'",
    "-'x' == s",
    "-true",
    "s\\n",
]


@pytest.mark.parametrize("text", HOSTILE, ids=[repr(t[:30]) for t in HOSTILE])
def test_invalid_input_raises_filter_error(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FilterSyntaxError) as caught:
        compile_filter(text, COLUMNS)
    err = caught.value
    assert isinstance(err, WorkflowError)
    rendered = str(err)
    assert "^" in rendered.splitlines()[-1 if err.hint is None else -2]
    assert 0 <= err.position <= len(text)
    assert not (tmp_path / "PWNED").exists()


def test_caret_points_at_the_problem():
    with pytest.raises(FilterSyntaxError) as caught:
        parse("i > )")
    err = caught.value
    assert err.position == 4
    line, caret = str(err).splitlines()[1:3]
    assert line.index(")") == caret.index("^")
    assert "expected a value" in err.problem and "got `)`" in err.problem


def test_caret_on_later_line_of_multiline_expression():
    with pytest.raises(FilterSyntaxError) as caught:
        parse("i > 1\n  and s ==\n")
    message = str(caught.value)
    assert "(line 2, column 11)" in message
    assert "after `==`, got the end of the expression" in message


def test_caret_in_long_expression_is_windowed():
    text = "i == 1 or " * 500 + "i == )"
    with pytest.raises(FilterSyntaxError) as caught:
        parse(text)
    _, line, caret = str(caught.value).splitlines()[:3]
    assert len(line) < 200
    assert line[caret.index("^")] == ")"


def test_too_long_and_too_deep_have_clear_messages():
    with pytest.raises(FilterSyntaxError, match="too long"):
        parse("i" * (MAX_LENGTH + 1))
    with pytest.raises(FilterSyntaxError, match="nested too deeply"):
        parse("(" * (MAX_DEPTH + 5) + "i" + ")" * (MAX_DEPTH + 5))
    with pytest.raises(FilterSyntaxError, match="nested too deeply"):
        parse("i" + " + i" * (MAX_DEPTH + 5) + " > 0")
    parse("(" * 90 + "i" + ")" * 90)  # within the limit


def test_non_string_is_filter_error():
    with pytest.raises(FilterSyntaxError, match="is a string"):
        parse(123)  # type: ignore[arg-type]


def test_unknown_column_suggests_nearest():
    with pytest.raises(UnknownColumnError) as caught:
        compile_filter("lang == 'en' and scroe > 0.5", ["score", "lang"])
    err = caught.value
    assert err.name == "scroe" and err.suggestion == "score"
    assert "unknown column `scroe`" in str(err) and "did you mean `score`?" in str(err)
    assert err.position == "lang == 'en' and ".__len__()


def test_unknown_column_case_and_listing_hints():
    with pytest.raises(UnknownColumnError, match="did you mean `Score`"):
        compile_filter("score > 1", ["Score", "x"])
    with pytest.raises(UnknownColumnError, match="the table's columns: `a`, `b`"):
        compile_filter("zzzz > 1", ["a", "b"])
    with pytest.raises(UnknownColumnError, match="backticks"):
        compile_filter("mycol > 1", ["my col"])
    with pytest.raises(UnknownColumnError, match="write `null`"):
        compile_filter("i == None", ["i"])


# ---------------------------------------------------------------- property tests

TOKENS = st.sampled_from([
    "i", "f", "s", "b", "`my col`", "nosuch", "1", "2.5", "-", "+", "*", "/", "%", "(", ")",
    "[", "]", ",", "==", "!=", "<", "<=", ">", ">=", "and", "or", "not", "in", "is", "null",
    "true", "false", "'x'", '"y"', "'", "`", "\\", ".", "=", "1e999", "0", " ",
])


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_random_text_raises_only_filter_errors(text):
    try:
        compile_filter(text, COLUMNS)
    except FilterSyntaxError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.lists(TOKENS, max_size=30).map(" ".join))
def test_random_token_soup_raises_only_filter_errors(text):
    try:
        expression = compile_filter(text, COLUMNS, schema=TABLE.schema)
    except FilterSyntaxError:
        return
    try:
        TABLE.filter(expression)
    except (pa.ArrowException, ValueError, TypeError, ArithmeticError):
        pass  # type mismatches are found by pyarrow at run time (processors wraps them)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=False, allow_infinity=False))
def test_numeric_literals_round_trip(n, x):
    assert parse(f"{n} == i") == Binary("==", Literal(n), Column("i"))
    node = parse(f"{x!r} == f")
    assert isinstance(node, Binary) and isinstance(node.left, Literal)
    value = node.left.value
    assert value == x and math.copysign(1, value) == math.copysign(1, x)
