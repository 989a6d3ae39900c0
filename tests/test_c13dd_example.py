"""`datadesigner:` stages end to end on examples/datadesigner, with its fake LLM server.

Skipped when the datadesigner extra is not installed (CI installs it)."""

from __future__ import annotations

import subprocess
import sys

import pyarrow.parquet as pq
from c13dd_support import (
    SECRET,
    DDProject,
    dd_project,
    journal_lists_batch,
    kill_build,
    needs_data_designer,
    wait_for,
)

pytestmark = needs_data_designer
__all__ = ["dd_project"]  # the fixture, used by name

DD_STAGES = ("personas", "answers", "judged")


def _messages(stage: dict) -> list[str]:
    return [r["message"] for r in stage["reasons"]]


def test_the_example_builds_offline_and_a_null_build_imports_no_data_designer(
        dd_project: DDProject) -> None:
    built = dd_project.build()
    assert [built[s]["result"] for s in (*DD_STAGES, "summary", "report")] == ["completed"] * 5
    assert [built[s]["rows"] for s in DD_STAGES] == [12, 12, 12]
    assert (dd_project.root / "reports" / "summary.md").read_text().startswith("# Judged")
    judged = dd_project.table("judged")
    assert {"persona", "question", "answer", "quality"} <= set(judged.column_names)
    for stage in DD_STAGES:
        record = dd_project.record(stage)
        assert record["discovered"]["dist:data-designer"]["by"] == f"configs/{stage}.yaml" \
            if stage != "judged" else "configs/judge.yaml"
        assert record["extra"]["datadesigner"]["fingerprint"]["config_hash"].startswith(
            "sha256:")
        assert (dd_project.artifacts / stage / "datadesigner" / "home").is_dir()
    # the API key is read from the environment by name, never written down
    for path in dd_project.artifacts.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path

    null = subprocess.run([sys.executable, "-X", "importtime", "-m", "buildtool"],
                          cwd=dd_project.root, env=dd_project.env(), capture_output=True,
                          text=True, timeout=300)
    assert null.returncode == 0, null.stderr
    assert "data_designer" not in null.stderr
    lines = [line for line in null.stdout.splitlines() if line.startswith("= ")]
    assert len(lines) == 5 and all(": up to date" in line for line in lines), null.stdout


def test_edits_rerun_what_they_should_and_the_explanation_names_the_column(
        dd_project: DDProject) -> None:
    dd_project.build()

    dd_project.edit("configs/personas.yaml", "weights: [1, 1, 1, 1]", "weights: [3, 1, 1, 1]")
    plan = dd_project.plan()
    assert _messages(plan["personas"]) == [
        "configs/personas.yaml: column 'name': params.weights changed: [1, 1, 1, 1] → "
        "[3, 1, 1, 1]"]
    assert plan["answers"]["reasons"][0]["code"] == "upstream_will_run"
    dd_project.edit("configs/personas.yaml", "weights: [3, 1, 1, 1]", "weights: [1, 1, 1, 1]")

    dd_project.edit("configs/judge.yaml", "help a beginner?", "help a complete beginner?")
    plan = dd_project.plan()
    assert plan["answers"]["action"] == "up_to_date"
    [reason] = plan["judged"]["reasons"]
    assert reason["message"].startswith("configs/judge.yaml: column 'quality': scores changed")
    assert (reason["column"], reason["key"]) == ("quality", "scores")
    dd_project.edit("configs/judge.yaml", "help a complete beginner?", "help a beginner?")

    dd_project.edit("Workflowfile", "num_records: 12", "num_records: 8")
    plan = dd_project.plan()
    assert _messages(plan["personas"]) == ["num_records changed: 12 → 8"]
    dd_project.edit("Workflowfile", "num_records: 8", "num_records: 12")

    dd_project.edit("Workflowfile", "tone: friendly", "tone: formal")
    assert _messages(dd_project.plan()["answers"]) == ["params.tone changed: friendly → formal"]
    dd_project.edit("Workflowfile", "tone: formal", "tone: friendly")
    assert {s["action"] for s in dd_project.plan().values()} == {"up_to_date"}

    dd_project.edit("configs/answers.yaml", "answer:\n", "answer briefly:\n")
    explain = dd_project.run("--explain", "-n").stdout + dd_project.run("--explain", "-n").stderr
    assert "column 'answer': prompt changed: 1 line changed" in explain
    assert "answer briefly:" in explain
    before = dd_project.table("answers").column("answer").to_pylist()
    built = dd_project.build()
    assert built["personas"]["result"] == "up_to_date"
    assert (built["answers"]["result"], built["answers"]["batches_run"]) == ("completed", 3)
    assert built["judged"]["result"] == "completed"
    assert dd_project.table("answers").column("answer").to_pylist() != before


def _hold_after_first_batch(dd_project: DDProject) -> subprocess.Popen[str]:
    """Build `answers` with the server answering the first batch's four row requests (one
    row group at a time; health checks are not counted) and holding every later one, until
    its first batch is listed in the stage's journal."""
    dd_project.server.control(hold_after_rows=4)
    proc = dd_project.start("answers")
    folder = dd_project.artifacts / "answers"
    wait_for(lambda: journal_lists_batch(folder, 0), proc, "the first batch was listed")
    return proc


def test_a_killed_stage_resumes_through_data_designer_and_equals_an_uninterrupted_run(
        dd_project: DDProject) -> None:
    dd_project.build("personas")
    proc = _hold_after_first_batch(dd_project)
    kill_build(proc)
    dd_project.server.control(hold_after_rows=None)
    first = dd_project.artifacts / "answers" / "batches" / "batch-000000.parquet"
    kept = first.read_bytes(), first.stat().st_mtime_ns

    # the killed run's record holds the config it ran: an edit now is said as the config's
    # (it was "code file changed" when the config was stored only at the run's end)
    dd_project.edit("configs/answers.yaml", "answer:\n", "answer briefly:\n")
    reasons = _messages(dd_project.plan("answers")["answers"])
    assert reasons[0].startswith("configs/answers.yaml: column 'answer': prompt changed"), \
        reasons
    dd_project.edit("configs/answers.yaml", "answer briefly:\n", "answer:\n")
    plan = dd_project.plan("answers")
    assert plan["answers"]["action"] == "resume"
    built = dd_project.build("answers")
    assert (built["answers"]["result"], built["answers"]["batches_run"]) == ("completed", 2)
    assert (first.read_bytes(), first.stat().st_mtime_ns) == kept
    resumed = dd_project.table("answers").to_pylist()

    built = dd_project.build("--force", "answers", "answers")
    assert built["answers"]["batches_run"] == 3
    assert dd_project.table("answers").to_pylist() == resumed


def test_a_server_failing_with_500s_fails_the_stage_and_the_next_build_resumes(
        dd_project: DDProject) -> None:
    dd_project.build("personas")
    proc = _hold_after_first_batch(dd_project)
    dd_project.server.control(fail=True, hold_after_rows=None)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, (out, err)
    assert "✗ answers: failed" in err
    assert "Data Designer finished 1 of 3 batches (4 of 12 rows)" in err
    assert "batch 1 lost all its 4 rows, batch 2 all 4, as generation failed" in err
    assert "the next build resumes" in err

    dd_project.server.control(fail=False)
    assert dd_project.plan("answers")["answers"]["action"] == "resume"
    built = dd_project.build("answers")
    assert (built["answers"]["result"], built["answers"]["batches_run"]) == ("completed", 2)
    assert built["answers"]["rows"] == 12


def test_an_override_of_the_judged_stage_is_held_and_its_dependants_rerun(
        dd_project: DDProject) -> None:
    dd_project.build()
    review = dd_project.root / "review.parquet"
    dd_project.run("export", "judged", str(review))
    table = pq.read_table(review).slice(0, 5)
    pq.write_table(table, review)
    dd_project.run("override", "judged", str(review))
    built = dd_project.build()
    assert built["judged"]["result"] == "up_to_date"
    assert built["summary"]["result"] == "completed"
    assert built["summary"]["reasons"][0]["code"] == "overridden"
    assert sum(r["answers"] for r in dd_project.table("summary").to_pylist()) == 5

    dd_project.edit("configs/judge.yaml", "help a beginner?", "help anyone?")
    plan = dd_project.plan()
    assert plan["judged"]["action"] == "held"
    assert plan["summary"]["action"] == "up_to_date"


def test_a_deleted_batch_of_a_completed_stage_comes_back_without_regenerating(
        dd_project: DDProject) -> None:
    """Its config has no model_configs: the library's defaults, seeded into the stage's own
    home before the config is read, give every run the same config fingerprint, so Data
    Designer's resume accepts its own dataset."""
    dd_project.build("personas")
    before = dd_project.table("personas").to_pylist()
    (dd_project.artifacts / "personas" / "batches" / "batch-000001.parquet").unlink()
    built = dd_project.build("personas")
    assert (built["personas"]["action"], built["personas"]["result"]) == ("resume", "completed")
    assert dd_project.table("personas").to_pylist() == before  # samplers are random: the same
    # rows mean no batch was generated again


def test_ctrl_c_ends_data_designer_records_the_stage_interrupted_and_it_resumes(
        dd_project: DDProject) -> None:
    import signal

    dd_project.build("personas")
    proc = _hold_after_first_batch(dd_project)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert dd_project.record("answers")["status"] == "interrupted"
    dd_project.server.control(hold_after_rows=None)
    built = dd_project.build("answers")
    assert (built["answers"]["action"], built["answers"]["batches_run"]) == ("resume", 2)
