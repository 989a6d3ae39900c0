"""`datadesigner:` stages whose batches lose rows: a batch Data Designer finished short because
generation failed is never kept (the next build makes it again), while rows a config drops by
design (an expression that renders empty) are; and `-j 2` with two such stages and a Ctrl-C.

Every stop point is the fake server's (it answers or holds a model's first N row requests),
never a timing. Skipped when the datadesigner extra is not installed (CI installs it)."""

from __future__ import annotations

import json
import signal
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq
from c13dd_support import (
    DDProject,
    dd_project,
    journal_lists_batch,
    needs_data_designer,
    wait_for,
)

pytestmark = needs_data_designer
__all__ = ["dd_project"]  # the fixture, used by name

DD_FILES = Path("datadesigner") / "run" / "dataset" / "parquet-files"


def _dd_file(project: DDProject, stage: str, index: int) -> Path:
    return project.artifacts / stage / DD_FILES / f"batch_{index:05d}.parquet"


def _listed(project: DDProject, stage: str) -> list[tuple[int, int]]:
    return [(b["index"], b["rows"]) for b in project.record(stage)["batches"]]


def test_a_batch_that_lost_rows_to_failed_calls_is_not_kept_and_the_next_build_makes_it(
        dd_project: DDProject) -> None:
    dd_project.build("personas")
    # batch 0's four rows and two of batch 1's are answered (one row group at a time), then
    # every row request fails: batch 1 is finished with 2 of its 4 rows, batch 2 with none
    dd_project.server.control(fail_after_rows=6)
    failed = dd_project.run("answers", check=False)
    assert failed.returncode == 1, failed.stderr
    assert "Data Designer finished 1 of 3 batches (4 of 12 rows)" in failed.stderr
    assert "batch 1 lost 2 of its 4 rows, batch 2 all 4" in failed.stderr
    assert "the next build resumes, generating them again" in failed.stderr
    assert _listed(dd_project, "answers") == [(0, 4)]
    assert not _dd_file(dd_project, "answers", 1).exists()

    # A build killed after Data Designer wrote a short batch, before dd-build judged it: the
    # next build does not trust it either
    first = pq.read_table(_dd_file(dd_project, "answers", 0))
    pq.write_table(first.slice(0, 2), _dd_file(dd_project, "answers", 1))

    dd_project.server.control(fail_after_rows=None)
    assert dd_project.plan("answers")["answers"]["action"] == "resume"
    built = dd_project.build("answers")
    assert (built["answers"]["result"], built["answers"]["batches_run"]) == ("completed", 2)
    assert (built["answers"]["rows"], _listed(dd_project, "answers")) == (
        12, [(0, 4), (1, 4), (2, 4)])
    resumed = dd_project.table("answers").to_pylist()
    dd_project.build("--force", "answers", "answers")
    assert dd_project.table("answers").to_pylist() == resumed


FILTER = """model_configs:
  - alias: greeter
    model: fake-greeter
    provider: local
columns:
  - name: kept
    column_type: expression
    expr: "{% if keep %}{{ name }}{% endif %}"
  - name: greeting
    column_type: llm-text
    model_alias: greeter
    prompt: "Greet {{ kept }}."
"""
KEEP = [True, False, True, True, True, True, False, True]  # batches of 4: each drops one


def _add_filter_stage(project: DDProject) -> None:
    (project.root / "configs" / "filter.yaml").write_text(FILTER)
    (project.root / "data").mkdir()
    (project.root / "data" / "people.jsonl").write_text("".join(
        json.dumps({"name": f"p{i}", "keep": keep}) + "\n" for i, keep in enumerate(KEEP)))
    with open(project.root / "Workflowfile", "a") as fh:
        fh.write("  greeted:\n    datadesigner: configs/filter.yaml\n"
                 "    seed: data/people.jsonl\n    batch_size: 4\n    models: models.yaml\n")


def test_rows_a_config_drops_by_design_are_kept_unless_a_call_of_their_batch_failed(
        dd_project: DDProject) -> None:
    _add_filter_stage(dd_project)
    # batch 0's three calls are answered and one of batch 1's: batch 1 loses a row by design
    # and two to failed calls
    dd_project.server.control(fail_after_rows=4)
    failed = dd_project.run("greeted", check=False)
    assert failed.returncode == 1, failed.stderr
    assert "batch 1 lost 3 of its 4 rows" in failed.stderr
    assert _listed(dd_project, "greeted") == [(0, 3)]  # its drop is the config's

    dd_project.server.control(fail_after_rows=None)
    built = dd_project.build("greeted")
    assert (built["greeted"]["action"], built["greeted"]["batches_run"]) == ("resume", 1)
    assert (built["greeted"]["result"], built["greeted"]["rows"]) == ("completed", 6)
    assert [r["kept"] for r in dd_project.table("greeted").to_pylist()] == [
        f"p{i}" for i, keep in enumerate(KEEP) if keep]
    assert dd_project.plan("greeted")["greeted"]["action"] == "up_to_date"

    # a resume finds both short batches, known to be short by design, and keeps them
    (dd_project.artifacts / "greeted" / "batches" / "batch-000001.parquet").unlink()
    calls = dd_project.server.control()["rows"]["fake-greeter"]
    built = dd_project.build("greeted")
    assert (built["greeted"]["action"], built["greeted"]["rows"]) == ("resume", 6)
    assert dd_project.server.control()["rows"]["fake-greeter"] == calls  # none made again


def test_ctrl_c_with_two_data_designer_stages_in_flight_interrupts_both_and_both_resume(
        dd_project: DDProject) -> None:
    config = (dd_project.root / "configs" / "answers.yaml").read_text()
    (dd_project.root / "configs" / "answers2.yaml").write_text(
        config.replace("model: fake-writer", "model: fake-writer-2"))
    with open(dd_project.root / "Workflowfile", "a") as fh:
        fh.write("  answers2:\n    datadesigner: configs/answers2.yaml\n    seed: personas\n"
                 "    batch_size: 4\n    models: models.yaml\n    params: {tone: formal}\n")
    dd_project.build("personas")
    dd_project.server.control(hold_after_rows=4)  # each stage's first batch, then they wait
    proc = dd_project.start("-j", "2", "answers", "answers2")
    for stage in ("answers", "answers2"):
        wait_for(partial(journal_lists_batch, dd_project.artifacts / stage, 0), proc,
                 f"{stage}'s first batch was listed")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    for stage in ("answers", "answers2"):
        assert dd_project.record(stage)["status"] == "interrupted", stage
        assert _listed(dd_project, stage) == [(0, 4)]

    dd_project.server.control(hold_after_rows=None)
    plan = dd_project.plan("answers", "answers2")
    assert (plan["answers"]["action"], plan["answers2"]["action"]) == ("resume", "resume")
    built = dd_project.build("-j", "2", "answers", "answers2")
    for stage in ("answers", "answers2"):
        assert (built[stage]["result"], built[stage]["batches_run"], built[stage]["rows"]) == (
            "completed", 2, 12), stage

