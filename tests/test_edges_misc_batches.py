"""A generate stage whose batches disagree on a column's type fails itself, at the batch that
disagrees, before that batch is written (issue 7: "Hard edges"). Before, the stage was
`completed` and only its consumers failed, for ever, since nothing reran it.

Batches must unify by the rule every reader of the stage's output uses (permissive promotion:
int64 with double is double, a column a batch lacks is null). The earlier batches stay; on a
resume the kept batches' parquet schemas are the earlier ones.
"""

from __future__ import annotations

from pathlib import Path

from conftest import Project

CODE = '''
import os
from pathlib import Path

def make(ctx):
    with open(Path(__file__).parent / "calls.log", "a") as fh:
        fh.write(f"{ctx.stage_name} {ctx.batch_index}\\n")
    if os.environ.get("RAISE_AT") == str(ctx.batch_index):
        raise RuntimeError("not today")
    kind = os.environ.get(f"KIND_{ctx.batch_index}", "int")
    value = {"int": 1, "str": "x", "float": 1.5, "none": None}[kind]
    return [{"id": ctx.batch_index, "a": value}]
'''

WORKFLOW = """
workflow: demo
stages:
  g:
    generate: code/batches.py:make
    num_records: 3
    batch_size: 1
  t:
    transform: code/stages.py:join
    inputs: [g]
"""


def setup(project: Project) -> None:
    project.write("code/batches.py", CODE)
    project.write("Workflowfile", WORKFLOW)


def batch_files(project: Project) -> list[str]:
    folder = project.artifacts / "g" / "batches"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_batch_whose_column_type_clashes_fails_the_stage(project: Project) -> None:
    setup(project)
    result = project.run("--json", KIND_1="str")
    assert result.code == 1, result.stderr
    g, t = result.stage("g"), result.stage("t")
    assert g["result"] == "failed" and t["result"] == "not_run"
    error = g["error"]
    assert "batch 1" in error and "'a'" in error and "string" in error and "int64" in error
    assert "batch 0" in error
    record = project.record("g")
    assert record["status"] == "failed"
    assert [b["index"] for b in record["batches"]] == [0]  # the earlier batch stays
    assert batch_files(project) == ["batch-000000.parquet"]  # the clashing one was not written
    assert project.run("show", "g").code == 2  # no output that looks complete

    project.clear_calls()
    again = project.run("--json", KIND_1="str")  # nothing changed: it fails the same way
    assert again.code == 1
    assert again.stage("g")["action"] == "resume"
    assert "'a'" in again.stage("g")["error"]
    assert project.calls() == ["g 1"]  # batch 0 was kept

    fixed = project.run("--json")  # the code now returns one type (here: the environment)
    assert fixed.code == 0, fixed.stderr
    assert fixed.stage("g")["result"] == "completed"
    assert fixed.stage("t")["result"] == "completed"
    assert project.run("show", "g").code == 0


def test_the_clash_is_found_against_the_batches_a_resume_keeps(project: Project) -> None:
    setup(project)
    first = project.run("--json", RAISE_AT="1")
    assert first.code == 1 and first.stage("g")["result"] == "failed"
    assert batch_files(project) == ["batch-000000.parquet"]
    project.clear_calls()

    resumed = project.run("--json", KIND_1="str")
    assert resumed.code == 1, resumed.stderr
    g = resumed.stage("g")
    assert g["action"] == "resume" and g["result"] == "failed"
    assert "batch 1" in g["error"] and "string" in g["error"] and "int64 in batch 0" in g["error"]
    assert project.calls() == ["g 1"]
    assert batch_files(project) == ["batch-000000.parquet"]


def test_batches_that_unify_are_fine(project: Project) -> None:
    """int64 then double reads as double; a null column takes the other batches' type."""
    setup(project)
    result = project.run("--json", KIND_1="float", KIND_2="none")
    assert result.code == 0, result.stderr
    assert result.stage("g")["result"] == "completed"
    assert result.stage("t")["result"] == "completed"
    shown = project.run("show", "g", "--json")
    assert shown.code == 0, shown.stderr
    assert [r["a"] for r in shown.json()["data"]] == [1.0, 1.5, None]
    assert not list(Path(project.root).rglob("*.tmp.*"))
