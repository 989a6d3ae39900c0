"""Bugs found hunting the step model (issue 8), each driven through the real CLI.

Every test here failed on the merged step model (cdab4f2); the fix commit of each says why.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Project, reason_codes


@pytest.fixture(autouse=True)
def _no_build_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests pin what the step model keeps and reruns on its own; with the build cache
    (issue 11) a revert among them is restored instead (tests/test_c11cache_*.py)."""
    monkeypatch.setenv("DD_BUILD_CACHE", "off")

CALLBACKS = '''
import pyarrow as pa
import pyarrow.parquet as pq
from pathlib import Path

def _log(ctx):
    with open(Path(__file__).parent / "calls.log", "a") as fh:
        fh.write(f"callback {ctx.stage_name}\\n")

def keep_even(ctx):
    _log(ctx)
    table = pq.read_table(ctx.stage_output)
    rows = [r for r in table.to_pylist() if r["id"] % 2 == 0]
    out = Path(ctx.out_dir) / "kept.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), out)
    return str(out)

def keep_all(ctx):
    _log(ctx)
    return None

def boom(ctx):
    raise RuntimeError("callback boom")
'''

WORKFLOW = """
workflow: demo
stages:
  drafts:
    generate: code/stages.py:rows
    num_records: 8
    batch_size: 2
    inputs: [prompts/p.txt]
    processors: {processors}
    on_success: {callback}
    outputs: [out/drafts.csv]
  final:
    transform: code/stages.py:join
    inputs: [drafts]
"""


def setup(project: Project, callback: str = "code/cb.py:keep_even",
          processors: str = "[]") -> None:
    project.write("code/cb.py", CALLBACKS)
    if not (project.root / "prompts/p.txt").exists():
        project.write("prompts/p.txt", "judge well\n")
    project.write("Workflowfile", WORKFLOW.format(callback=callback, processors=processors))


def build(project: Project, *args: str, code: int = 0) -> dict[str, Any]:
    result = project.run(*args, "--json")
    assert result.code == code, result.stderr
    return {s["stage"]: s for s in result.json()["stages"]}


def drafts_calls(project: Project) -> list[str]:
    return [c for c in project.calls() if c.startswith("drafts ")]


def approve(project: Project, stage: str = "drafts") -> None:
    rows = [{"id": 100, "value": 1, "tag": "ok"}, {"id": 102, "value": 2, "tag": "ok"}]
    pq.write_table(pa.Table.from_pylist(rows), project.root / "approved.parquet")
    result = project.run("override", stage, "approved.parquet")
    assert result.code == 0, result.stderr


def edit_record(project: Project, stage: str, change: Any) -> None:
    path = project.artifacts / stage / "stage.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


@pytest.fixture
def built(project: Project) -> Project:
    setup(project)
    build(project)
    project.clear_calls()
    return project


# ------------------------------------------------ 1. a held stage's own change is kept


@pytest.mark.parametrize("edit", ["code/stages.py", "prompts/p.txt"])
def test_a_held_change_to_code_or_a_file_input_survives_until_release(
        built: Project, edit: str) -> None:
    approve(built)
    build(built)
    path = built.root / edit
    path.write_text(path.read_text() + "\n# edited while the review is held\n")
    first = build(built)
    assert first["drafts"]["result"] == "held"
    second = build(built)  # the change is still there: still held, still reported
    assert second["drafts"]["result"] == "held", second["drafts"]
    assert {"code_changed", "input_changed"} & set(reason_codes(second["drafts"]))
    released = built.run("override", "--release", "drafts")
    assert released.code == 0, released.stderr
    built.clear_calls()
    after = build(built)
    assert after["drafts"]["result"] == "completed"
    assert after["drafts"]["batches_run"] == 4  # rebuilt for the change made while held
    assert len(drafts_calls(built)) == 4


# ------------------------------------------------ 2. overrides set by the previous dd-build

RUN_FLOW = """
workflow: demo
stages:
  r:
    run: python code/mk.py {outputs[0]}
    inputs: [code/mk.py]
    outputs: [data/r.parquet]
  t:
    transform: code/join.py:join
    inputs: [r]
"""

MAKE = """
import os, sys
import pyarrow as pa, pyarrow.parquet as pq
os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True)
pq.write_table(pa.table({"id": [1, 2, 3]}), sys.argv[1])
"""

JOIN = """
import pyarrow as pa
def join(ctx):
    return pa.table({"n": [ctx.inputs["r"].num_rows]})
"""


def _old_override(record: dict[str, Any]) -> None:
    """As dd-build before the step model wrote it: no `replaced`."""
    record["extra"]["override"].pop("replaced")



def test_releasing_an_old_override_of_a_run_stage_never_makes_it_empty(project: Project) -> None:
    project.write("code/mk.py", MAKE)
    project.write("code/join.py", JOIN)
    project.write("Workflowfile", RUN_FLOW)
    build(project)
    pq.write_table(pa.table({"id": [7, 8]}), project.root / "approved.parquet")
    assert project.run("override", "r", "approved.parquet").code == 0
    build(project)
    edit_record(project, "r", _old_override)

    project.run("override", "--release", "r")  # refused, or released: not emptied
    stages = build(project)

    assert stages["t"]["result"] != "skipped_empty_upstream", stages["t"]
    assert project.record("r")["output"]["kind"] in ("files", "override")
    assert project.record("r")["status"] == "completed"



def test_overriding_an_old_override_again_then_releasing_gives_the_stage_its_own_output(
        built: Project) -> None:
    approve(built)
    build(built)
    edit_record(built, "drafts", _old_override)
    pq.write_table(pa.Table.from_pylist([{"id": 104, "value": 3, "tag": "ok"}]),
                   built.root / "second.parquet")
    assert built.run("override", "drafts", "second.parquet").code == 0
    released = built.run("override", "--release", "drafts")
    assert released.code == 0, released.stderr

    shown = built.run("show", "drafts", "--json")  # the stage's own output, right away
    plan = build(built, "-n")

    assert shown.code == 0, shown.stderr
    assert [r["id"] for r in shown.json()["data"]] == [0, 2, 4, 6]
    assert "output_missing" not in reason_codes(plan["drafts"]), plan["drafts"]


# ------------------------------------------------ 3. a later step's input deleted after a failure



def test_a_failed_later_step_whose_input_file_is_gone_reruns_the_step_that_wrote_it(
        built: Project) -> None:
    setup(built, callback="code/cb.py:boom", processors="[{limit: 6}]")
    build(built, code=1)
    (built.artifacts / "drafts" / "processed" / "data.parquet").unlink()
    setup(built, processors="[{limit: 6}]")

    plan = build(built, "-n")
    stages = build(built)

    assert plan["drafts"]["step"] == "processors", plan["drafts"]
    assert stages["drafts"]["result"] == "completed" and stages["drafts"]["batches_run"] == 0
    assert stages["drafts"]["rows"] == 3  # ids 0, 2, 4 of the first six



def test_a_failed_later_step_with_a_batch_file_gone_regenerates_that_batch(
        built: Project) -> None:
    setup(built, callback="code/cb.py:boom")
    build(built, code=1)
    (built.artifacts / "drafts" / "batches" / "batch-000001.parquet").unlink()
    setup(built)
    built.clear_calls()

    stages = build(built)

    assert stages["drafts"]["batches_run"] == 1 and drafts_calls(built) == ["drafts 1"]
    assert stages["drafts"]["rows"] == 4
    assert build(built)["drafts"]["action"] == "up_to_date"


# ------------------------------------------------ 4. a callback that cannot be loaded



def test_a_misspelt_callback_in_a_later_step_keeps_the_last_good_record(built: Project) -> None:
    setup(built, callback="code/cb.py:keep_evn")  # refused when the Workflowfile is read
    refused = built.run()
    assert refused.code == 2 and "defines no function `keep_evn`" in refused.stderr
    # a file whose names only running it tells: the misspelling fails the step when it runs
    built.write("code/dyncb.py", "globals()['other'] = None\n")
    setup(built, callback="code/dyncb.py:keep_evn")
    failed = build(built, code=1)
    assert failed["drafts"]["result"] == "failed"
    assert built.record("drafts")["status"] == "completed"  # nothing was touched

    setup(built)  # reverted: nothing is paid again
    stages = build(built)

    assert stages["drafts"]["action"] == "up_to_date", stages["drafts"]
    assert built.calls() == []


# ------------------------------------------------ 5. a lost review of a stage with no later step

PLAIN = """
workflow: demo
stages:
  drafts:
    generate: code/stages.py:rows
    num_records: 8
    batch_size: 2
    {extra}
  final:
    transform: code/stages.py:join
    inputs: [drafts]
"""


@pytest.mark.parametrize("extra", ["description: no later step", "outputs: [out/drafts.csv]"])
def test_a_lost_override_reruns_the_dependants_that_consumed_it(project: Project,
                                                                extra: str) -> None:
    project.write("Workflowfile", PLAIN.format(extra=extra))
    build(project)
    approve(project)
    assert build(project)["final"]["result"] == "completed"  # it consumed the review
    for folder in (project.artifacts / "drafts" / "override").iterdir():
        for f in folder.iterdir():
            f.unlink()  # the review is lost: drafts' own output takes its place

    plan = build(project, "-n")
    stages = build(project)

    assert plan["final"]["action"] != "up_to_date", plan["final"]
    assert stages["final"]["result"] == "completed", stages["final"]
    assert build(project)["final"]["action"] == "up_to_date"


# ------------------------------------------------ 6. `code:` entries and the callback's file

CODE_FLOW = """
workflow: demo
stages:
  drafts:
    generate: code/stages.py:rows
    num_records: 8
    batch_size: 2
    code: [{code}]
    on_success: code/cb.py:keep_even
"""


def _edit_callback_file(project: Project, code: str) -> dict[str, Any]:
    project.write("code/cb.py", CALLBACKS)
    project.write("prompts/p.txt", "judge well\n")
    project.write("Workflowfile", CODE_FLOW.format(code=code))
    build(project)
    project.clear_calls()
    cb = project.root / "code/cb.py"
    cb.write_text(cb.read_text() + "\n# the callback's file only\n")
    return build(project)


def test_a_callback_file_edit_keeps_the_batches_when_code_entries_do_not_name_it(
        project: Project) -> None:
    stages = _edit_callback_file(project, "prompts/p.txt")
    assert (stages["drafts"]["step"], stages["drafts"]["batches_run"]) == ("on_success", 0)
    assert project.calls() == ["callback drafts"]


def test_a_callback_file_that_code_entries_name_is_the_stage_code(project: Project) -> None:
    stages = _edit_callback_file(project, "code/*.py")
    assert (stages["drafts"]["step"], stages["drafts"]["batches_run"]) == ("batches", 4)


# ------------------------------------------------ 7. a callback that returned None, recorded by
# the previous dd-build: its trace is the previous step's output, under that step's key


def _old_callback_trace(record: dict[str, Any]) -> None:
    record["steps"]["callback"] = dict(record["steps"]["processed"])


@pytest.fixture
def old_none(project: Project) -> Project:
    setup(project, callback="code/cb.py:keep_all", processors="[{limit: 6}]")
    build(project)
    edit_record(project, "drafts", _old_callback_trace)
    project.clear_calls()
    return project


def test_an_old_record_of_a_callback_that_returned_none_is_up_to_date(old_none: Project) -> None:
    stages = build(old_none)
    assert stages["drafts"]["action"] == "up_to_date", stages["drafts"]
    assert old_none.calls() == []


def test_an_old_callback_trace_is_no_held_change(old_none: Project) -> None:
    approve(old_none)
    build(old_none)
    stages = build(old_none)
    assert reason_codes(stages["drafts"]) == [], stages["drafts"]
    assert stages["drafts"]["action"] == "up_to_date"
