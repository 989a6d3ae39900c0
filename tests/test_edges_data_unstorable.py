"""Issue 7 §3: stage code returning what cannot be stored is a stage failure, never a traceback.

Exit 1, the record `failed` (not left `running`), and a message naming the stage, the callable
(and batch) and the cause: bad returns of generate and transform code, Arrow types parquet
cannot store, on_success returning something that is not a parquet path, seed files whose
schemas clash, and export copies a format cannot hold. Driven through the real CLI.
"""

from __future__ import annotations

import importlib.util

import pyarrow as pa
import pyarrow.csv as pcsv
import pytest
from conftest import Project

BAD_RETURNS = '''
import pyarrow as pa


class Thing:
    pass


def _interval():
    return pa.table({"x": pa.array([pa.MonthDayNano([1, 2, 3])],
                                   type=pa.month_day_nano_interval())})


def _union():
    return pa.table({"x": pa.UnionArray.from_dense(
        pa.array([0, 1], type=pa.int8()), pa.array([0, 0], type=pa.int32()),
        [pa.array([1]), pa.array(["a"])])})


def _no_child_struct():
    return pa.table({"x": pa.array([{}, {}], type=pa.struct([]))})


def _pandas_objects():
    import pandas as pd
    return pd.DataFrame({"a": [Thing()]})


CASES = {
    "strings": lambda: ["a", "b"],
    "mixed": lambda: [{"a": 1}, 3],
    "ragged": lambda: {"a": [1, 2], "b": [1]},
    "scalar_column": lambda: {"a": 1},
    "set": lambda: {1, 2},
    "set_cells": lambda: [{"a": ["x"]}, {"a": {"y", "z"}}],
    "set_column_cells": lambda: {"a": [["x"], {"y"}]},
    "object": lambda: {"a": [Thing()]},
    "object_in_rows": lambda: [{"a": 1}, {"a": Thing()}],
    "too_big": lambda: [{"a": 2 ** 70}],
    "two_types": lambda: [{"a": 1}, {"a": "x"}],
    "no_columns": lambda: [{}, {}],
    "int_key": lambda: [{1: "a"}],
    "interval": _interval,
    "union": _union,
    "empty_struct": _no_child_struct,
    "pandas": _pandas_objects,
}


def make(ctx):
    return CASES[ctx.params["case"]]()


def whole(ctx):
    return CASES[ctx.params["case"]]()
'''

# case -> words the message must hold (besides the stage, callable and batch); our words only,
# never pyarrow's
CAUSES = {
    "strings": ["item 0 is a str", "not a dict"],
    "mixed": ["item 1 is an int"],
    "ragged": ["different lengths", "'a' has 2", "'b' has 1"],
    "scalar_column": ["column 'a'", "not a list of values"],
    "set": ["returned a set"],
    "set_cells": ["set in column 'a' (row 1)", "not fixed"],
    "set_column_cells": ["set in column 'a' (row 1)", "not fixed"],
    "object": ["cannot convert to a table", "column 'a'"],
    "object_in_rows": ["cannot convert to a table", "column 'a'"],
    "too_big": ["cannot convert to a table", "column 'a'", "64 bits"],
    "two_types": ["cannot convert to a table", "column 'a'"],
    "no_columns": ["2 rows with no columns"],
    "int_key": ["key 1"],
    "interval": ["column 'x'", "parquet cannot store"],
    "union": ["column 'x'", "parquet cannot store"],
    "empty_struct": ["column 'x'", "parquet cannot store"],
    "pandas": ["cannot convert to a table"],
}


def _assert_stage_failed(p: Project, stage: str, words: list[str]) -> str:
    """Build: exit 1, the stage recorded failed, its error naming it and every word."""
    r = p.run("--json")
    assert r.code == 1, (r.code, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert p.record(stage)["status"] == "failed"
    error = r.stage(stage)["error"]
    assert error == p.record(stage)["error"]
    assert f"stage '{stage}'" in error
    for word in words:
        assert word in error, (word, error)
    return error


@pytest.mark.parametrize("case", sorted(CAUSES))
def test_generate_returning_what_cannot_be_stored(project: Project, case: str) -> None:
    if case == "pandas" and importlib.util.find_spec("pandas") is None:
        pytest.skip("pandas is not installed")
    project.write("code/bad.py", BAD_RETURNS)
    project.write("Workflowfile", f"""
        workflow: demo
        stages:
          g:
            generate: code/bad.py:make
            num_records: 2
            params: {{case: {case}}}
        """)
    _assert_stage_failed(project, "g", ["code/bad.py:make (batch 0)", *CAUSES[case]])
    assert project.record("g")["batches"] == []


@pytest.mark.parametrize("case", ["strings", "ragged", "interval"])
def test_transform_returning_what_cannot_be_stored(project: Project, case: str) -> None:
    project.write("code/bad.py", BAD_RETURNS)
    project.write("Workflowfile", f"""
        workflow: demo
        stages:
          a:
            generate: code/stages.py:rows
            num_records: 2
          t:
            transform: code/bad.py:whole
            inputs: [a]
            params: {{case: {case}}}
        """)
    _assert_stage_failed(project, "t", ["code/bad.py:whole", *CAUSES[case]])


CALLBACKS = '''
from pathlib import Path


def as_int(ctx):
    return 3


def as_bytes(ctx):
    return str(Path(ctx.out_dir) / "x.parquet").encode()


def as_list(ctx):
    return [ctx.stage_output]


def as_text(ctx):
    path = Path(ctx.out_dir) / "notes.txt"
    path.write_text("not a table")
    return str(path)


def as_fake_parquet(ctx):
    path = Path(ctx.out_dir) / "data.parquet"
    path.write_text("not parquet at all")
    return str(path)
'''


@pytest.mark.parametrize(("callback", "words"), [
    ("as_int", ["returned an int, not a path"]),
    ("as_bytes", ["returned a bytes, not a path"]),
    ("as_list", ["returned a list, not a path"]),
    ("as_text", ["notes.txt", "not a parquet file"]),
    ("as_fake_parquet", ["data.parquet", "not readable parquet"]),
])
def test_on_success_returning_what_is_not_a_parquet_path(project: Project, callback: str,
                                                         words: list[str]) -> None:
    project.write("code/callbacks.py", CALLBACKS)
    project.write("Workflowfile", f"""
        workflow: demo
        stages:
          g:
            generate: code/stages.py:rows
            num_records: 4
            batch_size: 2
            on_success: code/callbacks.py:{callback}
        """)
    error = _assert_stage_failed(project, "g", [f"code/callbacks.py:{callback}", *words])
    assert "key 'on_success'" in error
    assert len(project.record("g")["batches"]) == 2  # the batches stay for the next build


def test_seed_files_with_clashing_schemas(project: Project) -> None:
    (project.root / "data").mkdir()
    pcsv.write_csv(pa.table({"id": [1, 2], "x": [1, 2]}), project.root / "data/a.csv")
    pcsv.write_csv(pa.table({"id": [3], "x": ["three"]}), project.root / "data/b.csv")
    project.write("Workflowfile", """
        workflow: demo
        stages:
          g:
            generate: code/stages.py:rows
            seed: data/*.csv
        """)
    error = _assert_stage_failed(project, "g", ["data/a.csv", "data/b.csv", "'x'"])
    assert "key 'seed'" in error and "data/*.csv" in error
    # permissive promotion still unifies what it can: int64 with double
    pcsv.write_csv(pa.table({"id": [3], "x": [2.5]}), project.root / "data/b.csv")
    r = project.run("--json")
    assert r.code == 0, r.stderr
    assert r.stage("g")["rows"] == 3


@pytest.mark.parametrize(("output", "words"), [
    ("out/x.csv", ["x.csv", "column 'tags'", "list<", ".parquet or .jsonl"]),
    ("out/y.csv", ["y.csv", "column 'meta'", "struct<", ".parquet or .jsonl"]),
    ("out/z.csv", ["z.csv", "column 'blob'", "bytes"]),
])
def test_export_copy_a_format_cannot_hold(project: Project, output: str,
                                          words: list[str]) -> None:
    project.write("code/nested.py", '''
        def make(ctx):
            return [{"id": i, "tags": ["a", "b"][: i % 3], "meta": {"k": i}, "blob": b"\\xff"}
                    for i in range(ctx.size)]
        ''')
    keep = {"x": "tags", "y": "meta", "z": "blob"}[output[4]]
    project.write("Workflowfile", f"""
        workflow: demo
        stages:
          g:
            generate: code/nested.py:make
            num_records: 3
            processors: [{{keep: [id, {keep}]}}]
            outputs: [{output}]
        """)
    (project.root / "out").mkdir()
    error = _assert_stage_failed(project, "g", words)
    assert "key 'outputs'" in error
    assert not (project.root / output).exists()
    # the same stage exporting .jsonl holds lists and structs (bytes are refused there too)
    jsonl = output.replace(".csv", ".jsonl")
    project.write("Workflowfile", (project.root / "Workflowfile").read_text()
                  .replace(output, jsonl))
    r = project.run("--json")
    assert (r.code == 0) == (keep != "blob"), r.stderr
    assert "Traceback" not in r.stderr



def test_show_a_value_python_cannot_hold(project: Project) -> None:
    """A timestamp past the year 9999 is stored; `show` prints it as Arrow renders it."""
    project.write("code/far.py", '''
        import pyarrow as pa

        def make(ctx):
            return pa.table({"id": [0], "when": pa.array([10**12], pa.timestamp("s"))})
        ''')
    project.write("Workflowfile", """
        workflow: demo
        stages:
          g:
            generate: code/far.py:make
            num_records: 1
        """)
    assert project.run().code == 0
    for args in (("show", "g"), ("show", "g", "--json")):
        r = project.run(*args)
        assert r.code == 0, r.stderr
        assert "when" in r.stdout and "Traceback" not in r.stderr
    r = project.run("export", "g", "out.jsonl")
    assert r.code == 2 and "column 'when'" in r.stderr and "Traceback" not in r.stderr
