"""Built-in processors: each kind, their order, and the errors a user can cause."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildtool import processors as processors_module
from buildtool.errors import BuildError, StageFailed, WorkflowError
from buildtool.filterexpr import FilterSyntaxError
from buildtool.processors import apply_processors, validate_processors
from buildtool.workflowfile import PROCESSORS

STAGE = "judged"


def table() -> pa.Table:
    return pa.table({
        "id": [1, 2, 3, 4, 5, 6],
        "lang": ["en", "fr", "en", None, "en", "fr"],
        "score": [0.9, 0.2, None, 0.7, 0.9, 0.2],
        "text": ["a", "b", "a", "d", "a", "b"],
    })


def run(procs, t=None):
    return apply_processors(table() if t is None else t, procs, STAGE).to_pydict()


# ---------------------------------------------------------------- each kind, and order

CASES = [
    ("nothing", [], table().to_pydict()),
    ("drop", [{"drop": ["score", "text"]}],
     {"id": [1, 2, 3, 4, 5, 6], "lang": ["en", "fr", "en", None, "en", "fr"]}),
    ("drop repeated name", [{"drop": ["text", "text"]}],
     {k: v for k, v in table().to_pydict().items() if k != "text"}),
    ("drop nothing", [{"drop": []}], table().to_pydict()),
    ("keep in given order", [{"keep": ["text", "id"]}],
     {"text": ["a", "b", "a", "d", "a", "b"], "id": [1, 2, 3, 4, 5, 6]}),
    ("rename", [{"rename": {"score": "quality"}}, {"keep": ["quality"]}],
     {"quality": [0.9, 0.2, None, 0.7, 0.9, 0.2]}),
    ("rename swaps", [{"rename": {"id": "text", "text": "id"}}, {"keep": ["id"]}],
     {"id": ["a", "b", "a", "d", "a", "b"]}),
    ("rename to itself", [{"rename": {"id": "id"}}, {"keep": ["id"]}], {"id": [1, 2, 3, 4, 5, 6]}),
    ("rename nothing", [{"rename": {}}], table().to_pydict()),
    ("filter, null is false", [{"filter": "score > 0.5"}, {"keep": ["id"]}], {"id": [1, 4, 5]}),
    ("filter not in drops nulls", [{"filter": "lang not in ('fr')"}, {"keep": ["id"]}],
     {"id": [1, 3, 5]}),
    ("filter is null", [{"filter": "lang is null or score is null"}, {"keep": ["id"]}],
     {"id": [3, 4]}),
    ("filter on renamed column", [{"rename": {"lang": "l"}}, {"filter": "l == 'fr'"},
                                  {"keep": ["id"]}], {"id": [2, 6]}),
    ("two filters", [{"filter": "lang == 'en'"}, {"filter": "id > 1"}, {"keep": ["id"]}],
     {"id": [3, 5]}),
    ("filter keeps everything", [{"filter": "true"}], table().to_pydict()),
    ("filter keeps nothing", [{"filter": "false"}, {"keep": ["id"]}], {"id": []}),
    ("dedupe columns keeps first", [{"dedupe": ["text"]}, {"keep": ["id"]}], {"id": [1, 2, 4]}),
    ("dedupe two columns", [{"dedupe": ["lang", "score"]}, {"keep": ["id"]}],
     {"id": [1, 2, 3, 4]}),
    ("dedupe nulls are equal", [{"dedupe": ["lang"]}, {"keep": ["id"]}], {"id": [1, 2, 4]}),
    ("dedupe [] means whole rows", [{"drop": ["id"]}, {"dedupe": []}, {"keep": ["lang"]}],
     {"lang": ["en", "fr", "en", None]}),
    ("dedupe repeated name", [{"dedupe": ["text", "text"]}, {"keep": ["id"]}], {"id": [1, 2, 4]}),
    ("limit", [{"limit": 2}, {"keep": ["id"]}], {"id": [1, 2]}),
    ("limit 0", [{"limit": 0}, {"keep": ["id"]}], {"id": []}),
    ("limit beyond rows", [{"limit": 100}, {"keep": ["id"]}], {"id": [1, 2, 3, 4, 5, 6]}),
    ("filter then limit", [{"filter": "lang == 'fr'"}, {"limit": 1}, {"keep": ["id"]}],
     {"id": [2]}),
    ("limit then filter", [{"limit": 1}, {"filter": "lang == 'fr'"}, {"keep": ["id"]}],
     {"id": []}),
    ("dedupe then limit", [{"dedupe": ["lang"]}, {"limit": 2}, {"keep": ["id"]}], {"id": [1, 2]}),
    ("limit then dedupe", [{"limit": 4}, {"dedupe": ["text"]}, {"keep": ["id"]}],
     {"id": [1, 2, 4]}),
]


@pytest.mark.parametrize(("procs", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_processors(procs, expected):
    assert run(procs) == expected


def test_every_declared_processor_is_implemented():
    assert set(PROCESSORS) == set(processors_module._APPLY)


def test_input_table_is_not_modified():
    t = table()
    apply_processors(t, [{"drop": ["id"]}, {"filter": "score > 0.5"}], STAGE)
    assert t.equals(table())


def test_dedupe_on_unhashable_types_keeps_first():
    t = pa.table({
        "tags": [["a"], ["b"], ["a"], None, None, ["a", "b"]],
        "meta": [{"k": 1}, {"k": 1}, {"k": 1}, {"k": 2}, {"k": 2}, {"k": 1}],
        "n": [0, 1, 2, 3, 4, 5],
    })
    assert run([{"dedupe": ["tags"]}], t)["n"] == [0, 1, 3, 5]
    assert run([{"dedupe": ["meta"]}], t)["n"] == [0, 3]
    assert run([{"dedupe": ["tags", "meta"]}], t)["n"] == [0, 1, 3, 5]


def test_dedupe_nan_equals_nan_and_preserves_order_at_scale():
    t = pa.table({"x": [float("nan"), 1.0, float("nan"), 1.0]})
    assert run([{"dedupe": []}], t)["x"][1:] == [1.0]
    n = 100_000
    big = pa.table({"k": [(i * 7919) % 1000 for i in range(n)], "i": list(range(n))})
    out = apply_processors(big, [{"dedupe": ["k"]}], STAGE)
    assert out.num_rows == 1000
    assert out["i"].to_pylist() == sorted(out["i"].to_pylist())
    assert out["i"].to_pylist()[:3] == [0, 1, 2]


def test_dedupe_of_empty_and_one_row_tables():
    empty = table().slice(0, 0)
    assert apply_processors(empty, [{"dedupe": ["id"]}], STAGE).num_rows == 0
    assert apply_processors(table().slice(0, 1), [{"dedupe": []}], STAGE).num_rows == 1


def test_filter_widens_narrow_integers():
    t = pa.table({"x": pa.array([1, 2, 100], pa.int8())})
    assert run([{"filter": "x * 100 > 150"}], t) == {"x": [2, 100]}


# ---------------------------------------------------------------- run-time errors


@pytest.mark.parametrize(
    ("procs", "label", "column", "hint"),
    [
        ([{"drop": ["scroe"]}], "processor 1 (`drop`)", "scroe", "did you mean `score`?"),
        ([{"limit": 3}, {"keep": ["id", "txet"]}], "processor 2 (`keep`)", "txet",
         "did you mean `text`?"),
        ([{"rename": {"Lang": "language"}}], "processor 1 (`rename`)", "Lang",
         "did you mean `lang`?"),
        ([{"filter": "scores > 0.5"}], "processor 1 (`filter`)", "scores",
         "did you mean `score`?"),
        ([{"dedupe": ["txt"]}], "processor 1 (`dedupe`)", "txt", "did you mean `text`?"),
        ([{"drop": ["zzzz"]}], "processor 1 (`drop`)", "zzzz",
         "the table's columns: `id`, `lang`, `score`, `text`"),
        ([{"drop": ["score"]}, {"filter": "score > 1"}], "processor 2 (`filter`)", "score",
         "`score` was dropped by processor 1 (`drop`)"),
        ([{"rename": {"score": "q"}}, {"dedupe": ["score"]}], "processor 2 (`dedupe`)", "score",
         "`score` was renamed to `q` by processor 1 (`rename`)"),
        ([{"keep": ["id"]}, {"drop": ["lang"]}], "processor 2 (`drop`)", "lang",
         "`lang` was not kept by processor 1 (`keep`)"),
    ],
)
def test_unknown_column_fails_the_stage(procs, label, column, hint):
    with pytest.raises(StageFailed) as caught:
        run(procs)
    err = caught.value
    assert err.stage == STAGE and err.key == "processors"
    assert err.message.startswith(f"{label}: unknown column `{column}`")
    assert err.hint == hint
    assert f"stage '{STAGE}'" in str(err) and err.exit_code == 1


def test_filter_unknown_column_shows_caret():
    with pytest.raises(StageFailed) as caught:
        run([{"filter": "id > 1 and scroe > 0.5"}])
    lines = str(caught.value).splitlines()
    assert lines[1].strip() == "id > 1 and scroe > 0.5"
    assert lines[2].index("^") == lines[1].index("scroe")


@pytest.mark.parametrize(
    ("procs", "match"),
    [
        ([{"filter": "lang > 1"}], "cannot evaluate `lang > 1`"),
        ([{"filter": "score"}], "must evaluate to bool"),
        ([{"filter": "id % 0 == 1"}], "divide by zero"),
        ([{"filter": "id * 9223372036854775807 > 0"}], "overflow"),
        ([{"drop": ["id", "lang", "score", "text"]}], "remove every column"),
        ([{"rename": {"id": "text"}}], "two columns would be named `text`"),
    ],
)
def test_data_errors_fail_the_stage(procs, match):
    with pytest.raises(StageFailed, match=match) as caught:
        run(procs)
    assert caught.value.stage == STAGE and caught.value.key == "processors"


def test_type_error_hint_lists_column_types():
    with pytest.raises(StageFailed) as caught:
        run([{"filter": "lang > 1"}])
    assert caught.value.hint == "column types: `lang`: string"


def test_duplicate_column_names_in_the_table():
    t = pa.table([pa.array([1]), pa.array([2])], names=["a", "a"])
    with pytest.raises(StageFailed, match="2 columns named `a`"):
        apply_processors(t, [{"keep": ["a"]}], STAGE)
    with pytest.raises(StageFailed, match="remove every column"):
        apply_processors(t, [{"drop": ["a"]}], STAGE)


# ---------------------------------------------------------------- static validation


@pytest.mark.parametrize(
    ("procs", "match"),
    [
        ("drop", "must be a list of processors"),
        ({"drop": ["a"]}, "must be a list of processors"),
        ([["drop", "a"]], "processor 1: each processor is a mapping with one key"),
        ([{"drop": ["a"], "keep": ["b"]}], "each processor is a mapping with one key"),
        ([{}], "each processor is a mapping with one key"),
        ([{"limit": 1}, {"sample": 3}], "processor 2: unknown processor `sample`"),
        ([{"drop": "a"}], "processor 1 \\(`drop`\\) takes a list of column names"),
        ([{"drop": [1]}], "takes a list of column names"),
        ([{"dedupe": None}], "processor 1 \\(`dedupe`\\) takes a list of column names, got null"),
        ([{"keep": []}], "would remove every column"),
        ([{"keep": ["a", "b", "a"]}], "names `a` more than once"),
        ([{"rename": ["a"]}], "takes a mapping"),
        ([{"rename": {"a": "c", "b": "c"}}], "renames two columns to `c`"),
        ([{"rename": {"a": ""}}], "new name is empty"),
        ([{"filter": ""}], "takes a non-empty expression"),
        ([{"filter": 3}], "takes a non-empty expression"),
        ([{"limit": -1}], "takes an integer >= 0"),
        ([{"limit": True}], "takes an integer >= 0"),
        ([{"limit": 1.5}], "takes an integer >= 0"),
    ],
)
def test_validate_rejects_bad_shapes(procs, match):
    with pytest.raises(WorkflowError, match=match) as caught:
        validate_processors(procs, STAGE)
    assert caught.value.stage == STAGE and caught.value.key == "processors"
    with pytest.raises(WorkflowError, match=match):
        apply_processors(table(), procs, STAGE)  # the same checks guard run time


def test_unknown_processor_suggests_nearest():
    with pytest.raises(WorkflowError) as caught:
        validate_processors([{"dedup": ["a"]}], STAGE)
    assert caught.value.hint == "did you mean `dedupe`?"


def test_validate_rejects_bad_filter_syntax_with_caret():
    with pytest.raises(FilterSyntaxError) as caught:
        validate_processors([{"drop": ["a"]}, {"filter": "score >> 1"}], STAGE)
    err = caught.value
    assert isinstance(err, WorkflowError) and not isinstance(err, StageFailed)
    assert err.stage == STAGE and err.key == "processors"
    assert err.message.startswith("processor 2 (`filter`): expected a value after `>`")
    line, caret = str(err).splitlines()[1:3]
    assert caret.index("^") == line.index(">>") + 1


def test_validate_needs_no_columns_and_accepts_good_lists():
    validate_processors([], STAGE)
    validate_processors(
        [{"drop": ["x"]}, {"keep": ["y"]}, {"rename": {"y": "z"}}, {"filter": "nosuch > 1"},
         {"dedupe": []}, {"limit": 0}],
        STAGE,
    )


def test_validate_does_not_import_pyarrow():
    code = (
        "import sys; from buildtool.processors import validate_processors; "
        "validate_processors([{'filter': 'a > 1 and b in (1, 2)'}], 's'); "
        "assert 'pyarrow' not in sys.modules, 'pyarrow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_random_filters_raise_only_build_errors(text):
    try:
        apply_processors(table(), [{"filter": text}], STAGE)
    except BuildError:
        pass
