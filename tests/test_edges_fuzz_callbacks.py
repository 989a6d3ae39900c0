"""Removing an on_success callback, or switching to one in another file, keeps every batch.

Found by the correctness fuzzer's callbacks focus (tests/fuzz_workflows.py): the old
callback's file became "no longer used", which counted as a change of the stage's own code,
so every batch was regenerated (README: changing the callback reruns only the boundary).
"""

from __future__ import annotations

import pytest
from conftest import Project

_CALLBACKS = '''
from pathlib import Path


def _log(ctx, what):
    with open(Path(__file__).parent / "calls.log", "a") as fh:
        fh.write(f"{ctx.stage_name} {what}\\n")


def first(ctx):
    _log(ctx, "first")
    import pyarrow.parquet as pq

    table = pq.read_table(ctx.stage_output)
    pq.write_table(table.slice(0, 1), Path(ctx.out_dir) / "part-0.parquet")
    return ctx.out_dir
'''

_OTHER = '''
from pathlib import Path


def second(ctx):
    with open(Path(__file__).parent / "calls.log", "a") as fh:
        fh.write(f"{ctx.stage_name} second\\n")
    return None
'''


def _workflow(on_success: str | None) -> str:
    callback = f"on_success: {on_success}" if on_success else ""
    return f"""
        workflow: demo
        stages:
          a:
            generate: code/stages.py:rows
            num_records: 4
            batch_size: 2
            {callback}
          b:
            transform: code/stages.py:join
            inputs: [a]
        """


@pytest.fixture
def built(project: Project) -> Project:
    project.write("code/callbacks.py", _CALLBACKS)
    project.write("code/other.py", _OTHER)
    project.write("Workflowfile", _workflow("code/callbacks.py:first"))
    assert project.run("-q").code == 0
    assert project.table("b").column("n").to_pylist() == [1]  # the callback's one row
    project.clear_calls()
    return project


def _codes(result_stage: dict) -> list[str]:
    return [r["code"] for r in result_stage["reasons"]]


def test_removing_the_callback_keeps_every_batch(built: Project) -> None:
    built.write("Workflowfile", _workflow(None))

    result = built.run("--json")

    assert result.code == 0, result.stderr
    a = result.stage("a")
    assert a["batches_run"] == 0
    assert _codes(a) == ["spec_changed", "code_changed"]  # both still explained
    assert "code/callbacks.py" in a["reasons"][1]["message"]
    assert built.calls() == ["b all"]  # no batch of a; b reads a's batches again
    assert built.table("b").column("n").to_pylist() == [4]


def test_switching_to_a_callback_in_another_file_keeps_every_batch(built: Project) -> None:
    built.write("Workflowfile", _workflow("code/other.py:second"))

    result = built.run("--json")

    assert result.code == 0, result.stderr
    assert result.stage("a")["batches_run"] == 0
    assert built.calls() == ["a second", "b all"]
    assert built.run("-q").code == 0 and built.calls() == ["a second", "b all"]  # null build

