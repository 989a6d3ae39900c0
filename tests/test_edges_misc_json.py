"""Every `--json` document is strict JSON (issue 7: "Hard edges"): NaN and ±infinity, which JSON
has no number for (JavaScript's JSON.parse refuses `NaN`), are written as null, wherever they
are (rows of `show`, reasons' old and new values), as JSON.stringify does."""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow.parquet as pq
from conftest import Project, Result

NONFINITE = '''
def make(ctx):
    nan, inf = float("nan"), float("inf")
    return [
        {"id": 0, "x": nan, "xs": [1.5, nan], "s": {"y": inf}},
        {"id": 1, "x": inf, "xs": [-inf], "s": {"y": 2.5}},
        {"id": 2, "x": -inf, "xs": [], "s": {"y": -inf}},
        {"id": 3, "x": 0.25, "xs": None, "s": None},
    ]
'''

WORKFLOW = """
workflow: demo
stages:
  a:
    generate: code/nonfinite.py:make
    num_records: 4
    batch_size: 4
    params: {x: 1.5}
"""


def strict(result: Result) -> Any:
    """stdout parsed the way JavaScript's JSON.parse would: no NaN, Infinity or -Infinity."""
    def refuse(constant: str) -> None:
        raise AssertionError(f"not strict JSON: {constant} in {result.stdout[:400]}")

    return json.loads(result.stdout, parse_constant=refuse)


def test_show_json_writes_nonfinite_numbers_as_null(project: Project) -> None:
    project.write("code/nonfinite.py", NONFINITE)
    project.write("Workflowfile", WORKFLOW)
    assert project.run().code == 0
    shown = project.run("show", "a", "--json")
    assert shown.code == 0, shown.stderr
    assert strict(shown)["data"] == [
        {"id": 0, "x": None, "xs": [1.5, None], "s": {"y": None}},
        {"id": 1, "x": None, "xs": [None], "s": {"y": 2.5}},
        {"id": 2, "x": None, "xs": [], "s": {"y": None}},
        {"id": 3, "x": 0.25, "xs": None, "s": None},
    ]
    text = project.run("show", "a")  # the text table still shows them as they are
    assert "nan" in text.stdout and "inf" in text.stdout
    exported = project.run("export", "a", "a.parquet")  # the data itself keeps them
    assert exported.code == 0, exported.stderr
    assert math.isnan(pq.read_table(project.root / "a.parquet").column("x")[0].as_py())


def test_reasons_values_are_strict_json_too(project: Project) -> None:
    """A record edited by hand (Python's json reads NaN) reaches a reason's `old` value."""
    project.write("code/nonfinite.py", NONFINITE)
    project.write("Workflowfile", WORKFLOW)
    assert project.run().code == 0
    path = project.artifacts / "a" / "stage.json"
    path.write_text(path.read_text().replace('"x": 1.5', '"x": NaN', 1))
    for args in (("-n", "--json"), ("status", "--json"), ("--json",)):
        result = project.run(*args)
        assert result.code == 0, result.stderr
        stage = strict(result)["stages"][0]
        reason = next(r for r in stage["reasons"] if r["code"] == "spec_changed")
        assert reason["key"] == "params.x" and reason["old"] is None and reason["new"] == 1.5
