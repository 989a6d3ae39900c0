"""Bugs the correctness fuzzer's step-level edits found (tests/fuzz_steps.py, `--focus steps`
and `--focus overrides` of benchmarks/fuzz_correctness.py), each as the smallest project.

1. An own change of an overridden stage made while its review was held (its code, a file
   input, a module its code imports) was forgotten: the held build refreshed the record's
   file stats and took the new digests along, so after `override --release` the stage was
   "up to date" with its old output.
2. A stage that failed because its output had no rows recorded no step it stopped in, so
   setting `allow_empty: true` (a change to the `allow_empty` step) called a transform again,
   and re-ran a generate stage's callback, instead of only checking the kept output. (While
   allow_empty stays off, a rebuild fails again in the check, calling nothing:
   tests/test_edges_data_calls.py.)
3. A stage whose last run failed in a later step keeps the steps before it, but a file of
   theirs deleted since was not looked at: the kept step was used with its file gone (a
   deleted batch after a failed callback made the rerun callback read one batch less).
4. A run of only the later steps that failed (an empty output) left the previous record in
   force although its steps had replaced the stage's files: the record said `completed`
   while the build said failed, and a callback that had run was called again on every
   build, its change never recorded.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from conftest import Project, reason_codes

GEN = "def make(ctx):\n    return [{'id': ctx.offset + i, 'v': VALUE} for i in range(ctx.size)]\n"
READS = '''
from pathlib import Path


def make(ctx):
    value = len(Path(ctx.inputs["data/x.txt"]).read_text())
    return [{'id': ctx.offset + i, 'v': value} for i in range(ctx.size)]
'''
IMPORTS = '''
def make(ctx):
    from code.helper import VALUE
    return [{'id': ctx.offset + i, 'v': VALUE} for i in range(ctx.size)]
'''
REVIEWED = [{"id": 0, "v": 99}]


def _build(project: Project, *args: str) -> dict[str, Any]:
    result = project.run(*args, "--json")
    assert result.code in (0, 1), result.stderr
    return {s["stage"]: s for s in result.json()["stages"]}


def _edit(project: Project, rel: str, old: str, new: str) -> None:
    """Change a file's content and size, with an mtime the stats cannot miss."""
    path = project.root / rel
    path.write_text(path.read_text().replace(old, new))
    later = path.stat().st_mtime_ns + 2_000_000_000
    os.utime(path, ns=(later, later))


def _values(project: Project, stage: str) -> list[int]:
    shown = project.run("show", stage, "--json")
    assert shown.code == 0, shown.stderr
    return [r["v"] for r in shown.json()["data"]]


# ------------------------------------------------------------------ own changes while held


@pytest.mark.parametrize("changed", ["code", "file input", "imported module"])
def test_an_own_change_made_while_held_is_built_once_released(
        project: Project, changed: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    inputs = ""
    if changed == "code":
        project.write("code/a.py", GEN.replace("VALUE", "1"))
    elif changed == "file input":
        project.write("code/a.py", READS)
        project.write("data/x.txt", "x")
        inputs = "inputs: [data/x.txt]"
    else:
        project.write("code/a.py", IMPORTS)
        project.write("code/__init__.py", "")
        project.write("code/helper.py", "VALUE = 1\n")
    project.write("Workflowfile", f"""
        workflow: demo
        stages:
          a:
            generate: code/a.py:make
            num_records: 2
            batch_size: 1
            {inputs}
        """)
    assert _build(project)["a"]["result"] == "completed"
    assert _values(project, "a") == [1, 1]
    pq.write_table(pa.Table.from_pylist(REVIEWED), project.root / "review.parquet")
    assert project.run("override", "a", "review.parquet").code == 0
    rel, old, new = {"code": ("code/a.py", "'v': 1", "'v': 22"),
                     "file input": ("data/x.txt", "x", "xxx"),
                     "imported module": ("code/helper.py", "= 1", "= 22")}[changed]
    _edit(project, rel, old, new)

    held = _build(project)
    assert held["a"]["result"] == "held", held["a"]
    assert _values(project, "a") == [99]
    assert project.run("override", "--release", "a").code == 0
    plan = _build(project, "-n")

    assert plan["a"]["step"] == "batches", plan["a"]  # the change made while held counts
    assert reason_codes(plan["a"]) in (["code_changed"], ["input_changed"])
    assert _build(project)["a"]["batches_run"] == 2
    assert _values(project, "a") == ([3, 3] if changed == "file input" else [22, 22])


# ------------------------------------------------------------------ allow_empty after a failure

_EMPTY = """
    workflow: demo
    stages:
      a:
        generate: code/stages.py:rows
        num_records: 4
        batch_size: 2
        {a_extra}
      t:
        transform: code/stages.py:join
        inputs: [a]
        processors: [{{filter: "n < 0"}}]
        {t_extra}
    """


def test_allow_empty_after_an_empty_transform_failed_calls_nothing(project: Project) -> None:
    project.write("Workflowfile", _EMPTY.format(a_extra="", t_extra=""))
    failed = _build(project)
    assert failed["t"]["result"] == "failed"
    project.clear_calls()
    project.write("Workflowfile", _EMPTY.format(a_extra="", t_extra="allow_empty: true"))

    plan = _build(project, "-n")
    stages = _build(project)

    assert (plan["t"]["action"], plan["t"]["step"]) == ("resume", "allow_empty"), plan["t"]
    assert stages["t"]["result"] == "completed_empty"
    assert project.calls() == []  # the transform's call is kept: only the check runs


_KEEP_CB = '''
from pathlib import Path


def keep(ctx):
    with open(Path(__file__).parent / "calls.log", "a") as fh:
        fh.write(f"callback {ctx.stage_name}\\n")
    return None
'''


def test_allow_empty_after_an_empty_generate_failed_reruns_no_callback(project: Project) -> None:
    project.write("code/cb.py", _KEEP_CB)
    extra = 'processors: [{filter: "id < 0"}]\n        on_success: code/cb.py:keep'
    project.write("Workflowfile", _EMPTY.format(a_extra=extra, t_extra=""))
    failed = _build(project, "a")
    assert failed["a"]["result"] == "failed"
    assert project.calls() == ["a 0", "a 1", "callback a"]
    project.clear_calls()
    project.write("Workflowfile", _EMPTY.format(a_extra=extra + "\n        allow_empty: true",
                                                t_extra=""))

    plan = _build(project, "-n", "a")
    stages = _build(project, "a")

    assert plan["a"]["step"] == "allow_empty", plan["a"]
    assert stages["a"]["result"] == "completed_empty" and stages["a"]["batches_run"] == 0
    assert project.calls() == []


# ------------------------------------------------------------------ damage after a failed later step

_BOOM_CB = '''
from pathlib import Path


def cb(ctx):
    with open(Path(__file__).parent / "calls.log", "a") as fh:
        fh.write(f"callback {ctx.stage_name}\\n")
    if (Path(__file__).parent / "boom").exists():
        raise RuntimeError("callback boom")
    return None
'''


def test_a_processed_file_deleted_after_an_empty_failure_is_processed_again(
        project: Project) -> None:
    project.write("Workflowfile", _EMPTY.format(a_extra="", t_extra=""))
    assert _build(project)["t"]["result"] == "failed"
    (project.artifacts / "t" / "processed" / "data.parquet").unlink()
    project.write("Workflowfile", _EMPTY.format(a_extra="", t_extra="allow_empty: true"))
    project.clear_calls()

    plan = _build(project, "-n")
    stages = _build(project)

    assert plan["t"]["step"] == "processors", plan["t"]
    assert stages["t"]["result"] == "completed_empty" and project.calls() == []
    assert _build(project)["t"]["action"] == "up_to_date"  # its files are all there


def test_a_batch_deleted_after_a_callback_failed_is_generated_again(project: Project) -> None:
    project.write("code/cb.py", _BOOM_CB)
    project.write("code/boom", "")
    project.write("Workflowfile", _EMPTY.format(a_extra="on_success: code/cb.py:cb",
                                                t_extra=""))
    assert _build(project, "a")["a"]["result"] == "failed"
    (project.artifacts / "a" / "batches" / "batch-000001.parquet").unlink()
    (project.root / "code" / "boom").unlink()
    project.clear_calls()

    plan = _build(project, "-n", "a")
    stages = _build(project, "a")

    assert (plan["a"]["action"], plan["a"]["step"]) == ("resume", "batches"), plan["a"]
    assert stages["a"]["result"] == "completed" and stages["a"]["batches_run"] == 1
    assert project.calls() == ["a 1", "callback a"]
    assert _build(project, "a")["a"]["action"] == "up_to_date"


# ------------------------------------------------------------------ a later-step run that fails

_CHAIN = """
    workflow: demo
    stages:
      a:
        generate: code/stages.py:rows
        num_records: 4
        batch_size: 2
        {a_extra}
    """


def test_a_later_step_run_that_fails_is_recorded_failed(project: Project) -> None:
    project.write("Workflowfile", _CHAIN.format(a_extra=""))
    assert _build(project)["a"]["result"] == "completed"
    project.write("Workflowfile", _CHAIN.format(a_extra='processors: [{filter: "id < 0"}]'))
    project.clear_calls()

    failed = _build(project)

    assert failed["a"]["result"] == "failed" and failed["a"]["step"] == "processors"
    assert project.record("a")["status"] == "failed"
    assert project.run("show", "a").code == 2  # no output that claims to be current
    again = _build(project)  # allow_empty is off: it fails again in its check, running nothing
    assert (again["a"]["step"], again["a"]["batches_run"]) == ("allow_empty", 0)
    assert again["a"]["result"] == "failed" and project.calls() == []


def test_a_callback_switched_on_an_empty_stage_runs_once(project: Project) -> None:
    project.write("code/cb.py", _KEEP_CB + "\n\ndef other(ctx):\n    return keep(ctx)\n")
    empty = 'processors: [{filter: "id < 0"}]\n        on_success: code/cb.py:'
    project.write("Workflowfile", _CHAIN.format(a_extra=empty + "keep"))
    assert _build(project)["a"]["result"] == "failed"
    project.write("Workflowfile", _CHAIN.format(a_extra=empty + "other"))
    project.clear_calls()

    assert _build(project)["a"]["result"] == "failed"
    assert project.calls() == ["callback a"]
    again = _build(project)

    assert again["a"]["batches_run"] == 0, again["a"]
    assert project.calls() == ["callback a"]  # not called again: its change is recorded
