"""One rebuilder (issue 8): every step of a stage is planned and explained in one place.

Driven through the real CLI: `--explain -n` names the first step that runs and what is kept,
a change to a later step (processors, callback, export copies) keeps every batch, a step that
reruns with identical output leaves the dependants up to date, and an override is held until
the user releases it.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Project, reason_codes

CALLBACKS = '''
import pyarrow.parquet as pq
from pathlib import Path

def _write(ctx, keep):
    table = pq.read_table(ctx.stage_output)
    rows = [r for r in table.to_pylist() if keep(r)]
    out = Path(ctx.out_dir) / "kept.parquet"
    import pyarrow as pa
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), out)
    with open(Path(__file__).parent / "calls.log", "a") as fh:
        fh.write(f"callback {ctx.stage_name}\\n")
    return str(out)

def keep_even(ctx):
    return _write(ctx, lambda r: r["id"] % 2 == 0)

def keep_small(ctx):
    return _write(ctx, lambda r: r["id"] < 3)

def boom(ctx):
    raise RuntimeError("callback boom")

def keep_all(ctx):
    with open(Path(__file__).parent / "calls.log", "a") as fh:
        fh.write(f"callback {ctx.stage_name}\\n")
    return None
'''

WORKFLOW = """
workflow: demo
stages:
  drafts:
    generate: code/stages.py:rows
    num_records: 8
    batch_size: 2
    {callback}
    processors: {processors}
    outputs: {outputs}
  final:
    transform: code/stages.py:join
    inputs: [drafts]
"""


def setup(project: Project, callback: str = "code/cb.py:keep_even", processors: str = "[]",
          outputs: str = "[out/drafts.csv]") -> None:
    project.write("code/cb.py", CALLBACKS)
    line = f"on_success: {callback}" if callback else "description: no callback"
    project.write("Workflowfile", WORKFLOW.format(callback=line, processors=processors,
                                                  outputs=outputs))


def build(project: Project, *args: str) -> dict[str, Any]:
    result = project.run(*args, "--json")
    assert result.code == 0, result.stderr
    return {s["stage"]: s for s in result.json()["stages"]}


def generate_calls(project: Project) -> list[str]:
    return [c for c in project.calls() if c.startswith("drafts ")]


@pytest.fixture
def built(project: Project) -> Project:
    setup(project)
    build(project)
    project.clear_calls()
    return project


def test_explain_names_the_first_step_and_the_batches_kept(built: Project) -> None:
    setup(built, callback="code/cb.py:keep_small")
    explained = built.run("--explain", "-n")
    assert explained.code == 0, explained.stderr
    assert "drafts  run from on_success (4 batches kept)" in explained.stdout
    assert "on_success changed: code/cb.py:keep_even → code/cb.py:keep_small" \
        in explained.stdout
    plan = {s["stage"]: s for s in built.run("-n", "--json").json()["stages"]}
    assert (plan["drafts"]["action"], plan["drafts"]["step"]) == ("resume", "on_success")
    assert plan["drafts"]["reasons"][0]["step"] == "on_success"
    stages = build(built)
    assert stages["drafts"]["batches_run"] == 0 and generate_calls(built) == []
    assert built.calls().count("callback drafts") == 1
    assert stages["drafts"]["rows"] == 3  # ids 0, 1, 2


@pytest.mark.parametrize("change", [
    {"callback": ""},  # the callback removed
    {"callback": "code/cb.py:keep_small"},  # switched
    {"processors": "[{limit: 3}]"},  # a processor added
    {"outputs": "[]"},  # the export copy removed
    {"outputs": "[out/drafts.csv, out/drafts.jsonl]"},  # one added
])
def test_later_step_changes_keep_every_batch(built: Project, change: dict[str, str]) -> None:
    setup(built, **change)
    plan = build(built, "-n")
    assert plan["drafts"]["action"] == "resume" and plan["drafts"]["step"] != "batches"
    stages = build(built)
    assert stages["drafts"]["result"] == "completed"
    assert stages["drafts"]["batches_run"] == 0 and generate_calls(built) == []
    again = build(built)
    assert again["drafts"]["action"] == "up_to_date" and again["final"]["action"] == "up_to_date"


def test_only_the_export_copies_change_leaves_dependants_alone(built: Project) -> None:
    (built.root / "out/drafts.csv").unlink()
    plan = build(built, "-n")
    assert (plan["drafts"]["step"], plan["final"]["action"]) == ("outputs", "up_to_date")
    stages = build(built)
    assert stages["final"]["result"] == "up_to_date"
    assert (built.root / "out/drafts.csv").is_file() and built.calls() == []


def test_a_callback_rerun_with_identical_bytes_cuts_off(built: Project) -> None:
    cb = built.root / "code/cb.py"
    cb.write_text(cb.read_text() + "\n# a comment only\n")
    plan = build(built, "-n")
    assert plan["drafts"]["step"] == "on_success"
    assert reason_codes(plan["drafts"]) == ["code_changed"]
    stages = build(built)
    assert built.calls() == ["callback drafts"]  # the callback ran, nothing else
    assert stages["final"]["result"] == "up_to_date"


def test_a_transform_whose_callback_failed_is_not_called_again(project: Project) -> None:
    project.write("code/cb.py", CALLBACKS)
    project.write("Workflowfile", """
        workflow: demo
        stages:
          one:
            transform: code/stages.py:join
            on_success: code/cb.py:boom
        """)
    failed = project.run("--json")
    assert failed.code == 1 and failed.stage("one")["result"] == "failed"
    assert project.calls() == ["one all"]
    project.clear_calls()
    project.write("Workflowfile", """
        workflow: demo
        stages:
          one:
            transform: code/stages.py:join
            on_success: code/cb.py:keep_all
        """)
    plan = build(project, "-n")
    assert plan["one"]["step"] == "on_success", plan["one"]
    assert "failed_before" not in reason_codes(plan["one"]) or \
        any("in on_success" in r["message"] for r in plan["one"]["reasons"])
    build(project)
    assert project.calls() == ["callback one"]  # the transform's call was kept


# ---------------------------------------------------------------- overrides are held


def approve(project: Project, rows: list[dict[str, Any]]) -> None:
    pq.write_table(pa.Table.from_pylist(rows), project.root / "approved.parquet")
    result = project.run("override", "drafts", "approved.parquet")
    assert result.code == 0, result.stderr


APPROVED = [{"id": 100, "value": 1, "tag": "ok"}, {"id": 102, "value": 2, "tag": "ok"}]


@pytest.fixture
def reviewed(built: Project) -> Project:
    approve(built, APPROVED)
    stages = build(built)
    assert stages["final"]["result"] == "completed"  # it consumed the review
    built.clear_calls()
    return built


def test_an_own_change_is_held_and_reported(reviewed: Project) -> None:
    setup(reviewed, processors="[{limit: 1}]")
    text = reviewed.run("--explain", "-n")
    assert "drafts  overridden (held)" in text.stdout
    assert "processors changed" in text.stdout and "override --release drafts" in text.stdout
    stages = build(reviewed)
    assert (stages["drafts"]["action"], stages["drafts"]["result"]) == ("held", "held")
    assert reason_codes(stages["drafts"]) == ["spec_changed"]
    assert stages["final"]["result"] == "up_to_date" and reviewed.calls() == []
    status = reviewed.run("status")
    assert "drafts  overridden (held)" in status.stdout
    shown = reviewed.run("show", "drafts", "--json").json()["data"]
    assert [r["id"] for r in shown] == [100, 102]


def test_upstream_and_code_changes_are_held_too(reviewed: Project) -> None:
    stages_py = reviewed.root / "code/stages.py"
    stages_py.write_text(stages_py.read_text() + "\n# edited\n")
    stages = build(reviewed)
    assert stages["drafts"]["result"] == "held"
    assert "code_changed" in reason_codes(stages["drafts"])
    # final runs for its own code (the same file), not for a changed input
    assert reason_codes(stages["final"]) == ["code_changed"]


def test_rerun_from_an_ancestor_does_not_drop_the_review(reviewed: Project) -> None:
    reviewed.write("Workflowfile", (reviewed.root / "Workflowfile").read_text().replace(
        "  final:\n    transform: code/stages.py:join\n    inputs: [drafts]\n",
        "  final:\n    transform: code/stages.py:join\n    inputs: [drafts]\n"
        "  head:\n    generate: code/stages.py:rows\n    num_records: 2\n"))
    stages = build(reviewed, "--resume", "never")
    assert stages["drafts"]["result"] == "held"
    assert reason_codes(stages["drafts"])[0] == "forced"


def test_deleting_an_export_copy_rewrites_it_from_the_override(reviewed: Project) -> None:
    (reviewed.root / "out/drafts.csv").unlink()
    stages = build(reviewed)
    assert stages["drafts"]["step"] == "outputs" and stages["drafts"]["batches_run"] == 0
    assert stages["final"]["result"] == "up_to_date"
    text = (reviewed.root / "out/drafts.csv").read_text()
    assert "100" in text and "102" in text
    assert reviewed.record("drafts")["output"]["kind"] == "override"


def test_release_lets_the_stage_rebuild(reviewed: Project) -> None:
    setup(reviewed, processors="[{limit: 1}]")
    assert build(reviewed)["drafts"]["result"] == "held"
    released = reviewed.run("override", "--release", "drafts")
    assert released.code == 0, released.stderr
    assert not any((reviewed.artifacts / "drafts" / "override").glob("*/*.parquet"))
    stages = build(reviewed)
    assert stages["drafts"]["result"] == "completed" and stages["drafts"]["batches_run"] == 0
    assert stages["final"]["result"] == "completed"  # it had consumed the review
    assert stages["drafts"]["rows"] == 1


def test_force_lets_the_stage_rebuild(reviewed: Project) -> None:
    stages = build(reviewed, "--force", "drafts")
    assert stages["drafts"]["result"] == "completed"
    assert reviewed.record("drafts")["output"]["kind"] != "override"
    assert len(generate_calls(reviewed)) == 4


def test_release_without_an_override_is_a_usage_error(built: Project) -> None:
    result = built.run("override", "--release", "drafts", "--json")
    assert result.code == 2 and "no override" in result.json()["error"]["message"]
    both = built.run("override", "--release", "drafts", "x.parquet")
    assert both.code == 2
    neither = built.run("override", "drafts")
    assert neither.code == 2


def test_allow_empty_after_an_empty_transform_does_not_call_it_again(project: Project) -> None:
    project.write("code/cb.py", CALLBACKS)
    flow = """
        workflow: demo
        stages:
          one:
            transform: code/stages.py:join
            processors: [{{limit: 0}}]
            {extra}
        """
    project.write("Workflowfile", flow.format(extra="description: strict"))
    failed = project.run("--json")
    assert failed.code == 1 and "no rows" in failed.stage("one")["error"]
    project.clear_calls()
    project.write("Workflowfile", flow.format(extra="allow_empty: true"))
    plan = build(project, "-n")
    assert plan["one"]["step"] == "allow_empty", plan["one"]
    stages = build(project)
    assert stages["one"]["result"] == "completed_empty" and project.calls() == []


def test_a_later_step_failing_is_recorded_and_resumed_there(built: Project) -> None:
    setup(built, callback="code/cb.py:boom", processors="[{limit: 6}]")
    failed = built.run("--json")
    assert failed.code == 1 and failed.stage("drafts")["batches_run"] == 0
    record = built.record("drafts")
    assert (record["status"], record["extra"]["stopped_in"]) == ("failed", "on_success")
    assert "processed" in record["steps"]  # the step before it is kept
    status = built.run("status", "--json").json()["stages"][0]
    assert status["step"] == "on_success"
    setup(built, callback="code/cb.py:keep_small", processors="[{limit: 6}]")
    stages = build(built)
    assert stages["drafts"]["step"] == "on_success" and stages["drafts"]["batches_run"] == 0
    assert generate_calls(built) == []


@pytest.mark.parametrize("edit", ["code", "input"])
def test_a_held_change_survives_held_builds_and_runs_after_release(reviewed: Project,
                                                                   edit: str) -> None:
    if edit == "input":  # give drafts a file input first, and let it be built
        reviewed.write("data/in.txt", "one")
        text = (reviewed.root / "Workflowfile").read_text()
        reviewed.write("Workflowfile", text.replace("    num_records: 8\n",
                                                    "    num_records: 8\n    inputs: [data/in.txt]\n"))
        assert reviewed.run("override", "--release", "drafts").code == 0
        build(reviewed)
        approve(reviewed, APPROVED)
        build(reviewed)
        reviewed.write("data/in.txt", "two")
    else:
        stages_py = reviewed.root / "code/stages.py"
        stages_py.write_text(stages_py.read_text() + "\n# edited\n")
    for _ in range(2):  # held builds keep the change pending
        stages = build(reviewed)
        assert stages["drafts"]["result"] == "held"
        assert {"code_changed", "input_changed"} & set(reason_codes(stages["drafts"]))
    status = reviewed.run("status", "--json").json()["stages"][0]
    assert status["action"] == "held"
    assert reviewed.run("override", "--release", "drafts").code == 0
    reviewed.clear_calls()
    stages = build(reviewed)
    assert stages["drafts"]["result"] == "completed" and len(generate_calls(reviewed)) == 4


def test_override_of_a_run_stage_without_a_table_is_refused(project: Project) -> None:
    project.write("Workflowfile", """
        workflow: demo
        stages:
          report:
            run: echo hi > report.md
            outputs: [report.md]
        """)
    assert project.run().code == 0
    pq.write_table(pa.table({"x": [1]}), project.root / "r.parquet")
    result = project.run("override", "report", "r.parquet", "--json")
    assert result.code == 2 and "not a table" in result.json()["error"]["message"]


def test_force_says_it_lets_the_review_go(reviewed: Project) -> None:
    plan = build(reviewed, "-n", "--force", "drafts")
    assert "let go" in plan["drafts"]["reasons"][0]["message"]
