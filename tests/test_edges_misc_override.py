"""Export copies always equal the selected output, also after `dd-build override` (issue 7:
"Hard edges"; DESIGN.md §5: "export copies are written from the override").

`override` writes the stage's export copies from the review before it records it; a build
rewrites copies that do not match the override in force (written by an older dd-build, edited,
deleted, or newly declared) without rerunning the stage, so the review stays. A kill of
`override` at any step leaves one review in force, and the next build makes the copies match it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import crash_support as cs
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
import pytest
from conftest import Project, reason_codes

WORKFLOW = """
workflow: demo
stages:
  drafts:
    generate: code/stages.py:rows
    num_records: 6
    batch_size: 3
    outputs: [out/drafts.csv, out/drafts.jsonl]
  final:
    transform: code/stages.py:join
    inputs: [drafts]
"""

APPROVED = [{"id": 100, "value": -1, "tag": "approved"},
            {"id": 101, "value": -2, "tag": "approved"}]


def write_review(project: Project, name: str, rows: list[dict[str, Any]]) -> None:
    pq.write_table(pa.Table.from_pylist(rows), project.root / name)


def csv_rows(project: Project, rel: str = "out/drafts.csv") -> list[dict[str, Any]]:
    return pcsv.read_csv(project.root / rel).to_pylist()


def jsonl_rows(project: Project, rel: str = "out/drafts.jsonl") -> list[dict[str, Any]]:
    return pjson.read_json(project.root / rel).to_pylist()


def shown(project: Project, stage: str = "drafts") -> list[dict[str, Any]]:
    result = project.run("show", stage, "--json", "-n", "1000")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)["data"]


def build(project: Project, *args: str) -> dict[str, dict[str, Any]]:
    result = project.run("--json", *args)
    assert result.code == 0, result.stderr
    return {s["stage"]: s for s in result.json()["stages"]}


def temp_files(project: Project) -> list[str]:
    return [p.name for p in project.root.rglob("*") if ".tmp." in p.name]


@pytest.fixture
def overridden(project: Project) -> Project:
    """Built once; drafts then overridden with APPROVED (its export copies rewritten)."""
    project.write("Workflowfile", WORKFLOW)
    assert project.run().code == 0
    assert len(csv_rows(project)) == 6
    write_review(project, "approved.parquet", APPROVED)
    result = project.run("override", "drafts", "approved.parquet")
    assert result.code == 0, result.stderr
    project.clear_calls()
    return project


def test_override_writes_the_export_copies_from_the_review(overridden: Project) -> None:
    project = overridden
    assert csv_rows(project) == APPROVED  # at once, not only after the next build
    assert jsonl_rows(project) == APPROVED
    status = project.run("status", "--json")
    drafts = next(s for s in status.json()["stages"] if s["stage"] == "drafts")
    assert drafts["up_to_date"] and drafts["reasons"] == []

    stages = build(project)
    assert stages["drafts"]["result"] == "up_to_date"
    assert reason_codes(stages["final"]) == ["overridden"]
    assert project.calls() == ["final all"]
    assert shown(project) == APPROVED
    assert csv_rows(project) == APPROVED and jsonl_rows(project) == APPROVED
    assert build(project)["drafts"]["result"] == "up_to_date"  # and it stays so


def test_copies_left_stale_by_an_older_override_are_rewritten_and_the_review_kept(
        project: Project) -> None:
    """What an older dd-build left: the override recorded, the copies (and their step's
    record) still those of the batches."""
    project.write("Workflowfile", WORKFLOW)
    assert project.run().code == 0
    built = project.record("drafts")
    stale = {rel: (project.root / rel).read_bytes() for rel in ("out/drafts.csv",
                                                                "out/drafts.jsonl")}
    write_review(project, "approved.parquet", APPROVED)
    assert project.run("override", "drafts", "approved.parquet").code == 0
    assert build(project)["final"]["result"] == "completed"
    record = project.record("drafts")
    record["steps"]["exports"] = built["steps"]["exports"]
    (project.artifacts / "drafts" / "stage.json").write_text(json.dumps(record))
    old = {f["path"]: f for f in built["steps"]["exports"]["files"]}
    for rel, data in stale.items():  # with the recorded stats: only the step's key differs
        (project.root / rel).write_bytes(data)
        os.utime(project.root / rel, ns=(old[rel]["mtime_ns"], old[rel]["mtime_ns"]))
    project.clear_calls()

    plan = project.run("-n", "--json")
    drafts = plan.stage("drafts")
    assert drafts["action"] == "resume"
    assert reason_codes(drafts) == ["exports_stale"]
    assert "override" in drafts["reasons"][0]["message"]
    assert drafts["reasons"][0]["files"] == ["out/drafts.csv", "out/drafts.jsonl"]
    assert plan.stage("final")["action"] == "up_to_date"  # only export copies: output stays

    stages = build(project)
    assert stages["drafts"]["result"] == "completed"
    assert stages["drafts"]["batches_run"] == 0
    assert stages["final"]["result"] == "up_to_date"  # the selected output did not change
    assert project.calls() == []  # no stage code ran
    assert project.record("drafts")["output"]["kind"] == "override"
    assert csv_rows(project) == APPROVED and jsonl_rows(project) == APPROVED
    assert {s["result"] for s in build(project).values()} == {"up_to_date"}


@pytest.mark.parametrize("damage", ["edited", "deleted"])
def test_a_damaged_copy_of_an_overridden_stage_is_rewritten_from_the_review(
        overridden: Project, damage: str) -> None:
    project = overridden
    assert build(project)["final"]["result"] == "completed"
    project.clear_calls()
    path = project.root / "out/drafts.csv"
    if damage == "edited":
        path.write_text('"id","value","tag"\n1,2,"by hand"\n')
    else:
        path.unlink()
    stages = build(project)
    assert reason_codes(stages["drafts"]) == [f"output_{'modified' if damage == 'edited' else 'missing'}"]
    assert stages["drafts"]["result"] == "completed" and stages["drafts"]["batches_run"] == 0
    assert stages["final"]["result"] == "up_to_date"
    assert project.calls() == []
    assert project.record("drafts")["output"]["kind"] == "override"  # the review stays
    assert csv_rows(project) == APPROVED


def test_declaring_another_copy_keeps_the_review(overridden: Project) -> None:
    project = overridden
    assert build(project)["final"]["result"] == "completed"
    project.clear_calls()
    project.write("Workflowfile", WORKFLOW.replace(
        "outputs: [out/drafts.csv, out/drafts.jsonl]",
        "outputs: [out/drafts.csv, out/drafts.jsonl, out/more.parquet]"))
    stages = build(project)
    assert reason_codes(stages["drafts"]) == ["spec_changed"]
    assert stages["drafts"]["result"] == "completed"
    assert stages["final"]["result"] == "up_to_date"
    assert project.calls() == []
    assert project.record("drafts")["output"]["kind"] == "override"
    assert pq.read_table(project.root / "out/more.parquet").to_pylist() == APPROVED
    assert {s["result"] for s in build(project).values()} == {"up_to_date"}


def test_a_review_an_export_copy_cannot_hold_is_refused(overridden: Project) -> None:
    project = overridden
    before = project.record("drafts")
    copies = (project.root / "out/drafts.csv").read_bytes()
    write_review(project, "listy.parquet", [{**r, "notes": ["a", "b"]} for r in APPROVED])
    result = project.run("override", "drafts", "listy.parquet", "--json")
    assert result.code == 2, result.stderr
    error = result.json()["error"]
    assert "out/drafts.csv" in error["message"] and "'notes'" in error["message"]
    assert error["stage"] == "drafts" and "Traceback" not in result.stderr
    assert project.record("drafts") == before  # nothing changed
    assert (project.root / "out/drafts.csv").read_bytes() == copies


CALLBACK = '''
from pathlib import Path
import pyarrow.parquet as pq

def first_three(ctx):
    with open(Path(__file__).parent / "calls.log", "a") as fh:
        fh.write(f"{ctx.stage_name} callback\\n")
    out = Path(ctx.out_dir) / "three.parquet"
    pq.write_table(pq.read_table(ctx.stage_output).slice(0, 3), out)
    return str(out)
'''

BOUNDARY = """
workflow: demo
stages:
  drafts:
    generate: code/stages.py:rows
    num_records: 9
    batch_size: 3
    processors:
      - filter: "value >= 0"
      - drop: [tag]
    on_success: code/callback.py:first_three
    outputs: [out/drafts.csv]
  final:
    transform: code/stages.py:join
    inputs: [drafts]
"""


def test_override_of_a_stage_with_processors_and_a_callback(project: Project) -> None:
    project.write("code/callback.py", CALLBACK)
    project.write("Workflowfile", BOUNDARY)
    assert project.run().code == 0
    assert [set(r) for r in csv_rows(project)] == [{"id", "value"}] * 3
    write_review(project, "approved.parquet", APPROVED)  # an extra column (tag) is fine
    assert project.run("override", "drafts", "approved.parquet").code == 0
    project.clear_calls()

    assert csv_rows(project) == APPROVED  # the copy is the override's, not the callback's
    status = project.run("status")
    line = next(x for x in status.stdout.splitlines() if x.startswith("drafts"))
    assert "up to date" in line and "override from approved.parquet" in line
    stages = build(project)
    assert stages["drafts"]["result"] == "up_to_date"
    assert stages["final"]["result"] == "completed"
    assert project.calls() == ["final all"]  # no batch, processor or callback reran
    assert shown(project) == APPROVED
    assert csv_rows(project) == APPROVED


def probed_override(project: Project, source: str, target: str) -> subprocess.CompletedProcess:
    env = project.env(CRASH_KILL_AT=target, CRASH_PHASE_FILE=str(project.root.parent / "phase"))
    return subprocess.run([sys.executable, str(cs.THIS), "--dd-build", "override", "drafts",
                           source], cwd=project.root, env=env, capture_output=True, text=True,
                          timeout=120)


SECOND = [{"id": 200, "value": -3, "tag": "second"}]

# (probe target, the review in force after the kill)
WINDOWS = [
    ("-:override-export", "first"),  # the new review's file written, no copy yet
    ("-:override-export>fsync#1", "first"),  # the first copy's temp file written
    ("-:override-export>fsync#3", "first"),  # one copy replaced, the other's temp written
    ("-:record-write", "first"),  # both copies replaced, the record not yet written
    ("-:record-write>fsync#2", "second"),  # recorded
    ("-:override-cleanup", "second"),  # recorded; the old review's file still there
]


@pytest.mark.parametrize(("target", "in_force"), WINDOWS)
def test_a_killed_override_leaves_copies_the_next_build_makes_match(overridden: Project,
                                                                    target: str,
                                                                    in_force: str) -> None:
    project = overridden
    assert build(project)["final"]["result"] == "completed"
    write_review(project, "second.parquet", SECOND)
    killed = probed_override(project, "second.parquet", target)
    assert killed.returncode == -signal.SIGKILL, f"not killed at {target}: {killed.stderr}"
    rows = APPROVED if in_force == "first" else SECOND
    assert shown(project) == rows  # one review in force, whole
    project.clear_calls()

    stages = build(project)
    assert stages["drafts"]["result"] in ("up_to_date", "completed")
    assert stages["drafts"]["batches_run"] == 0
    assert project.record("drafts")["output"]["kind"] == "override"
    assert shown(project) == rows
    assert csv_rows(project) == rows and jsonl_rows(project) == rows
    assert project.calls() == ([] if in_force == "first" else ["final all"])
    assert temp_files(project) == []
    assert {s["result"] for s in build(project).values()} == {"up_to_date"}


def test_a_copy_that_cannot_hold_the_review_fails_and_the_review_stays(project: Project) -> None:
    project.write("Workflowfile", WORKFLOW.replace("outputs: [out/drafts.csv, out/drafts.jsonl]",
                                                   "outputs: [out/drafts.parquet]"))
    assert project.run().code == 0
    listy = [{**r, "notes": ["a", "b"]} for r in APPROVED]  # an extra column CSV cannot hold
    write_review(project, "listy.parquet", listy)
    assert project.run("override", "drafts", "listy.parquet").code == 0
    assert build(project)["final"]["result"] == "completed"
    project.write("Workflowfile", WORKFLOW.replace("outputs: [out/drafts.csv, out/drafts.jsonl]",
                                                   "outputs: [out/drafts.parquet, out/x.csv]"))
    result = project.run("--json")
    assert result.code == 1, result.stderr
    drafts = result.stage("drafts")
    assert drafts["result"] == "failed"
    assert "out/x.csv" in drafts["error"] and "'notes'" in drafts["error"]
    assert result.stage("final")["result"] == "not_run"
    assert project.record("drafts")["output"]["kind"] == "override"  # nothing recorded
    assert shown(project) == listy

    project.write("Workflowfile", WORKFLOW.replace("outputs: [out/drafts.csv, out/drafts.jsonl]",
                                                   "outputs: [out/drafts.parquet]"))
    project.clear_calls()
    assert {s["result"] for s in build(project).values()} == {"up_to_date"}
    assert project.calls() == []
