"""Crashes, failures, signals, locks and resume modes, through the real CLI (DESIGN.md §3, §5).

Each scenario runs `python -m buildtool` as a subprocess on the CHAIN workflow (a → b → c) and
stops it with a real signal at a known batch (HANG_AT writes a marker file, then blocks).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CHAIN, STAGE_CODE, Project

ALL_B = [f"b {i}" for i in range(6)]


# ---------------------------------------------------------------- helpers


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Builds a test started; any still alive at the end are killed (by their own pid)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pa.Table]:
    """The tables of a clean, uninterrupted build of a fresh copy of the project."""
    proj = Project(tmp_path_factory.mktemp("clean") / "proj")
    proj.write("code/stages.py", STAGE_CODE)
    proj.write("Workflowfile", CHAIN)
    result = proj.run()
    assert result.code == 0, result.stderr
    return {name: proj.table(name) for name in ("a", "b", "c")}


def start_until(project: Project, procs: list[subprocess.Popen[str]], at: str,
                *args: str) -> subprocess.Popen[str]:
    """Start a build with HANG_AT=`at` and return once that batch has been reached."""
    stage, index = at.split(":")
    proc = project.start(*args, HANG_AT=at)
    procs.append(proc)
    project.wait_for(f"code/{stage}-reached-{index}", proc)
    return proc


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def kill_at(project: Project, procs: list[subprocess.Popen[str]], at: str, *args: str) -> None:
    """SIGKILL a build at batch `at` (e.g. "b:3"), then forget the calls made so far."""
    code, _, _ = stop(start_until(project, procs, at, *args))
    assert code == -signal.SIGKILL
    (project.root / "code" / f"{at.replace(':', '-reached-')}").unlink()
    project.clear_calls()


def journal_lines(project: Project, stage: str) -> list[dict[str, Any]]:
    name = project.record(stage)["journal"]
    assert name, "a running record names its journal"
    text = (project.artifacts / stage / name).read_text()
    return [json.loads(line) for line in text.splitlines()]


def listed(project: Project, stage: str) -> list[int]:
    """Batch indices the record lists, with its journal when it is still running."""
    rec = project.record(stage)
    indices = {b["index"] for b in rec["batches"]}
    if rec["journal"]:
        indices |= {e["index"] for e in journal_lines(project, stage)}
    return sorted(indices)


def codes(stage: dict[str, Any]) -> list[str]:
    return [r["code"] for r in stage["reasons"]]


def batch_names(project: Project, stage: str) -> list[str]:
    return sorted(p.name for p in (project.artifacts / stage / "batches").iterdir())


def temp_files(project: Project) -> list[Path]:
    return [p for p in project.artifacts.rglob("*") if ".tmp." in p.name]


def edit_workflow(project: Project, old: str, new: str) -> None:
    path = project.root / "Workflowfile"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def set_params(project: Project, stage: str, tag: str) -> None:
    anchor = {"b": "    batch_size: 10\n", "c": "    inputs: [a, b]\n"}[stage]
    edit_workflow(project, anchor, f"{anchor}    params: {{tag: {tag}}}\n")


def assert_matches_clean(project: Project, clean: dict[str, pa.Table]) -> None:
    for name in ("a", "b", "c"):
        assert project.record(name)["status"] == "completed"
        assert project.table(name).equals(clean[name]), f"stage {name} differs from a clean build"


def build_all(project: Project) -> None:
    result = project.run()
    assert result.code == 0, result.stderr
    project.clear_calls()


# ---------------------------------------------------------------- 1. SIGKILL mid-stage


def test_sigkill_mid_stage_leaves_running_record_and_resumes(project, procs, clean):
    kill_at(project, procs, "b:3")

    rec = project.record("b")
    assert rec["status"] == "running"
    assert listed(project, "b") == [0, 1, 2]
    assert project.record("a")["status"] == "completed"
    assert not (project.artifacts / "c" / "stage.json").exists()

    result = project.run("--json")
    assert result.code == 0, result.stderr
    b = result.stage("b")
    assert (b["action"], b["result"], codes(b)) == ("resume", "completed", ["incomplete"])
    assert b["batches_run"] == 3 and b["batches_total"] == 6 and b["rows"] == 60
    assert result.stage("a")["result"] == "up_to_date"
    assert result.stage("c")["result"] == "completed"
    assert project.calls() == ["b 3", "b 4", "b 5", "c all"]
    assert project.record("b")["journal"] is None
    assert batch_names(project, "b") == [f"batch-{i:06d}.parquet" for i in range(6)]
    assert_matches_clean(project, clean)


def test_resume_rechecks_the_kept_batches(project, procs, clean):
    kill_at(project, procs, "b:3")
    batches = project.artifacts / "b" / "batches"
    (batches / "batch-000001.parquet").unlink()
    pq.write_table(pq.read_table(batches / "batch-000000.parquet"), batches / "batch-000002.parquet")

    result = project.run("--json")
    assert result.code == 0, result.stderr
    b = result.stage("b")
    assert (b["action"], codes(b)) == ("resume", ["incomplete"])
    assert b["reasons"][0]["batches_done"] == 1
    assert b["batches_run"] == 5
    assert project.calls() == ["b 1", "b 2", "b 3", "b 4", "b 5", "c all"]
    assert_matches_clean(project, clean)


def test_interrupted_stage_whose_spec_changed_runs_fresh(project, procs):
    kill_at(project, procs, "b:3")
    set_params(project, "b", "y")

    refused = project.run("--resume", "always")
    assert refused.code == 3
    assert "params.tag" in refused.stderr
    assert project.calls() == []

    result = project.run("--json")
    assert result.code == 0, result.stderr
    b = result.stage("b")
    assert b["action"] == "run" and "spec_changed" in codes(b)
    assert b["batches_run"] == 6
    assert [c for c in project.calls() if c.startswith("b ")] == ALL_B
    assert set(project.table("b").column("tag").to_pylist()) == {"y"}
    assert batch_names(project, "b") == [f"batch-{i:06d}.parquet" for i in range(6)]


# ---------------------------------------------------------------- 2. a stage that raises


def test_failed_stage_is_recorded_and_resumes_from_its_batches(project, clean):
    result = project.run("--json", FAIL_AT="b:3")
    assert result.code == 1
    doc = result.json()
    assert doc["ok"] is False
    b = result.stage("b")
    assert b["result"] == "failed"
    assert "boom at b:3" in b["error"]
    assert result.stage("c")["result"] == "not_run"
    rec = project.record("b")
    assert rec["status"] == "failed"
    assert "boom at b:3" in rec["error"]
    assert listed(project, "b") == [0, 1, 2]
    assert not (project.artifacts / "c" / "stage.json").exists()
    assert "c all" not in project.calls()
    project.clear_calls()

    result = project.run("--json")
    assert result.code == 0, result.stderr
    b = result.stage("b")
    assert (b["action"], b["result"], codes(b)) == ("resume", "completed", ["failed_before"])
    assert b["batches_run"] == 3
    assert project.calls() == ["b 3", "b 4", "b 5", "c all"]
    assert_matches_clean(project, clean)


# ---------------------------------------------------------------- 3. a batch file lost or changed


def test_deleted_batch_regenerates_only_that_batch_with_early_cutoff(project, clean):
    build_all(project)
    c_record = (project.artifacts / "c" / "stage.json").read_bytes()
    (project.artifacts / "b" / "batches" / "batch-000004.parquet").unlink()

    result = project.run("--json")
    assert result.code == 0, result.stderr
    b = result.stage("b")
    assert b["action"] == "resume" and b["result"] == "completed"
    assert codes(b) == ["output_missing"]
    assert b["reasons"][0]["file"] == "b/batches/batch-000004.parquet"
    assert b["batches_run"] == 1
    assert project.calls() == ["b 4"]
    c = result.stage("c")
    assert c["result"] == "up_to_date" and c["batches_run"] == 0
    assert (project.artifacts / "c" / "stage.json").read_bytes() == c_record
    assert_matches_clean(project, clean)


def test_modified_batch_is_output_modified_and_regenerated(project, clean):
    build_all(project)
    batches = project.artifacts / "b" / "batches"
    other = pq.read_table(batches / "batch-000001.parquet")
    pq.write_table(other, batches / "batch-000002.parquet")

    result = project.run("--json")
    assert result.code == 0, result.stderr
    b = result.stage("b")
    assert codes(b) == ["output_modified"]
    assert b["reasons"][0]["file"] == "b/batches/batch-000002.parquet"
    assert b["action"] == "resume" and b["batches_run"] == 1
    assert project.calls() == ["b 2"]
    assert result.stage("c")["result"] == "up_to_date"
    assert_matches_clean(project, clean)


# ---------------------------------------------------------------- 4. corrupt records

CORRUPT = {
    "garbage": (b"\x00\xff\xfe not json at all \x13\x37", "record_unreadable"),
    "truncated": (b'{"format": 1, "stage": "b", "status": "comp', "record_unreadable"),
    "format99": (None, "format_changed"),
}


def _corrupt(project: Project, how: str) -> bytes:
    path = project.artifacts / "b" / "stage.json"
    data, _ = CORRUPT[how]
    if data is None:
        rec = json.loads(path.read_text())
        rec["format"] = 99
        data = json.dumps(rec).encode()
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("how", sorted(CORRUPT))
def test_corrupt_record_reruns_the_stage(project, clean, how):
    build_all(project)
    _corrupt(project, how)

    result = project.run("--json")
    assert result.code == 0, result.stderr
    b = result.stage("b")
    assert (b["action"], b["result"]) == ("run", "completed")
    assert codes(b) == [CORRUPT[how][1]]
    assert b["batches_run"] == 6
    assert project.calls() == ALL_B
    assert result.stage("c")["result"] == "up_to_date"  # same rows again: early cutoff
    assert project.record("b")["format"] == 1
    assert_matches_clean(project, clean)


@pytest.mark.parametrize("how", sorted(CORRUPT))
def test_strict_resume_refuses_a_corrupt_record_and_leaves_it(project, how):
    build_all(project)
    data = _corrupt(project, how)
    before = sorted(p.name for p in (project.artifacts / "b" / "batches").iterdir())

    result = project.run("--resume", "always")
    assert result.code == 3
    assert "b" in result.stderr
    assert project.calls() == []
    assert (project.artifacts / "b" / "stage.json").read_bytes() == data
    assert batch_names(project, "b") == before


# ---------------------------------------------------------------- 5. strict resume


def test_strict_resume_refuses_a_project_never_built(project):
    result = project.run("--resume", "always")
    assert result.code == 3
    assert project.calls() == []
    assert not list(project.root.glob("artifacts/demo/*/stage.json"))


def test_strict_resume_refuses_a_params_change_before_anything_runs(project):
    build_all(project)
    before = (project.artifacts / "b" / "stage.json").read_bytes()
    set_params(project, "b", "y")

    result = project.run("--resume", "always")
    assert result.code == 3
    assert "b:" in result.stderr and "params.tag" in result.stderr
    assert project.calls() == []
    assert (project.artifacts / "b" / "stage.json").read_bytes() == before


def test_strict_resume_refuses_a_new_stage_over_reused_upstreams(project):
    build_all(project)
    project.write("Workflowfile", CHAIN + "  d:\n    transform: code/stages.py:join\n    inputs: [c]\n")

    result = project.run("--resume", "always")
    assert result.code == 3
    assert "d:" in result.stderr
    assert project.calls() == []
    assert not (project.artifacts / "d").exists()


def test_strict_resume_allows_resuming_after_sigkill(project, procs, clean):
    kill_at(project, procs, "b:3")

    result = project.run("--json", "--resume", "always")
    assert result.code == 0, result.stderr
    b, c = result.stage("b"), result.stage("c")
    assert (b["action"], codes(b), b["batches_run"]) == ("resume", ["incomplete"], 3)
    assert (c["action"], codes(c), c["result"]) == ("run", ["no_record"], "completed")
    assert project.calls() == ["b 3", "b 4", "b 5", "c all"]
    assert_matches_clean(project, clean)


def test_strict_resume_runs_a_dependant_whose_only_reason_is_upstream(project, procs, clean):
    build_all(project)
    kill_at(project, procs, "b:3", "--force", "b")
    assert project.record("b")["status"] == "running"

    result = project.run("--json", "--resume", "always")
    assert result.code == 0, result.stderr
    b, c = result.stage("b"), result.stage("c")
    assert (b["action"], codes(b), b["batches_run"]) == ("resume", ["incomplete"], 3)
    assert (c["action"], codes(c)) == ("run", ["upstream_will_run"])
    assert c["result"] == "up_to_date"  # decided again after b: same output, early cutoff
    assert project.calls() == ["b 3", "b 4", "b 5"]
    assert_matches_clean(project, clean)


def test_strict_resume_refuses_a_changed_dependant_of_a_resuming_stage(project, procs, clean):
    # The review finding: once an upstream resumes, a changed downstream must still be refused.
    build_all(project)
    kill_at(project, procs, "b:3", "--force", "b")
    c_before = (project.artifacts / "c" / "stage.json").read_bytes()
    set_params(project, "c", "z")

    result = project.run("--json", "--resume", "always")
    assert result.code == 3
    assert "c:" in result.stderr and "params.tag" in result.stderr
    assert "b:" not in result.stderr  # b itself may resume
    assert project.calls() == []
    assert project.record("b")["status"] == "running"
    assert listed(project, "b") == [0, 1, 2]
    assert (project.artifacts / "c" / "stage.json").read_bytes() == c_before

    # Forcing the changed stage is an explicit opt-in: allowed, and b still resumes.
    result = project.run("--json", "--force", "c", "--resume", "always")
    assert result.code == 0, result.stderr
    b, c = result.stage("b"), result.stage("c")
    assert (b["action"], b["batches_run"]) == ("resume", 3)
    assert (c["action"], codes(c)[0], c["result"]) == ("run", "forced", "completed")
    assert project.calls() == ["b 3", "b 4", "b 5", "c all"]
    assert project.table("b").equals(clean["b"])
    assert project.table("c").column("tag").to_pylist() == ["z"]


def test_strict_resume_allows_forcing_the_interrupted_stage(project, procs, clean):
    kill_at(project, procs, "b:3")

    result = project.run("--json", "--force", "b", "--resume", "always")
    assert result.code == 0, result.stderr
    b = result.stage("b")
    assert (b["action"], codes(b)[0], b["batches_run"]) == ("run", "forced", 6)
    assert project.calls() == [*ALL_B, "c all"]
    assert_matches_clean(project, clean)


# ---------------------------------------------------------------- 6. --resume never


def test_resume_never_runs_every_stage_fresh(project, procs, clean):
    build_all(project)
    result = project.run("--json", "--resume", "never")
    assert result.code == 0, result.stderr
    for name in ("a", "b", "c"):
        stage = result.stage(name)
        assert (stage["action"], codes(stage)[0], stage["result"]) == ("run", "forced", "completed")
    assert project.calls() == [*(f"a {i}" for i in range(4)), *ALL_B, "c all"]
    assert_matches_clean(project, clean)

    # Even an interrupted stage starts over instead of resuming.
    kill_at(project, procs, "b:3", "--resume", "never")
    result = project.run("--json", "--resume", "never")
    assert result.code == 0, result.stderr
    assert result.stage("b")["batches_run"] == 6
    assert [c for c in project.calls() if c.startswith("b ")] == ALL_B
    assert_matches_clean(project, clean)


# ---------------------------------------------------------------- 7. SIGINT / SIGTERM


@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_marks_stage_interrupted_and_next_build_resumes(project, procs, clean, sig,
                                                               exit_code):
    code, _, err = stop(start_until(project, procs, "b:3"), sig)
    assert code == exit_code, err
    rec = project.record("b")
    assert rec["status"] == "interrupted"
    assert [b["index"] for b in rec["batches"]] == [0, 1, 2]
    assert rec["journal"] is None
    assert not list((project.artifacts / "b").glob("journal-*"))
    assert temp_files(project) == []
    project.clear_calls()

    result = project.run("--json")
    assert result.code == 0, result.stderr
    b = result.stage("b")
    assert (b["action"], codes(b), b["batches_run"]) == ("resume", ["incomplete"], 3)
    assert project.calls() == ["b 3", "b 4", "b 5", "c all"]
    assert_matches_clean(project, clean)


# ---------------------------------------------------------------- 8. the build lock


def test_lock_refuses_a_second_build_but_not_readers(project, procs, clean):
    first = start_until(project, procs, "b:3")

    second = project.run()
    assert second.code == 4
    assert f"pid {first.pid}" in second.stderr

    cleaning = project.run("clean", "--all")
    assert cleaning.code == 4
    assert (project.artifacts / "b" / "stage.json").exists()

    dry = project.run("-n", "--json")
    assert dry.code == 0, dry.stderr
    assert dry.stage("b")["action"] == "resume"
    status = project.run("status", "--json")
    assert status.code == 0, status.stderr
    assert next(s for s in status.json()["stages"] if s["stage"] == "b")["status"] == "running"

    code, _, _ = stop(first)
    assert code == -signal.SIGKILL
    project.clear_calls()
    third = project.run("--json")
    assert third.code == 0, third.stderr
    assert third.stage("b")["batches_run"] == 3
    assert_matches_clean(project, clean)


# ---------------------------------------------------------------- 9. unlisted batch files


def test_resume_deletes_batch_files_the_record_does_not_list(project, procs, clean):
    kill_at(project, procs, "b:3")
    batches = project.artifacts / "b" / "batches"
    shutil.copy(batches / "batch-000001.parquet", batches / "batch-000009.parquet")
    # A batch made durable just before the kill but never journaled: it must not be trusted.
    shutil.copy(batches / "batch-000001.parquet", batches / "batch-000003.parquet")
    (batches / ".batch-000004.parquet.tmp.4242.0123456789ab").write_bytes(b"half a file")
    # What a kill in the middle of writing the record itself leaves beside it.
    (batches.parent / ".stage.json.tmp.4242.0123456789ab").write_bytes(b'{"format": 1, "sta')

    result = project.run("--json")
    assert result.code == 0, result.stderr
    assert result.stage("b")["batches_run"] == 3
    assert project.calls() == ["b 3", "b 4", "b 5", "c all"]
    assert batch_names(project, "b") == [f"batch-{i:06d}.parquet" for i in range(6)]
    assert temp_files(project) == []
    assert_matches_clean(project, clean)


def test_resume_stops_at_a_torn_journal_line(project, procs, clean):
    kill_at(project, procs, "b:3")
    journal = project.artifacts / "b" / project.record("b")["journal"]
    batches = project.artifacts / "b" / "batches"
    # A kill in the middle of an append leaves half a line; its batch file is not trusted.
    shutil.copy(batches / "batch-000000.parquet", batches / "batch-000003.parquet")
    with open(journal, "a") as fh:
        fh.write('{"index": 3, "file": "b/batches/batch-0000')

    result = project.run("--json")
    assert result.code == 0, result.stderr
    assert result.stage("b")["reasons"][0]["batches_done"] == 3
    assert result.stage("b")["batches_run"] == 3
    assert project.calls() == ["b 3", "b 4", "b 5", "c all"]
    assert_matches_clean(project, clean)


def test_a_killed_build_resumes_in_a_copy_of_the_project(project, procs, clean, tmp_path):
    kill_at(project, procs, "b:3")
    copy = Project(tmp_path / "elsewhere" / "copied")
    shutil.copytree(project.root, copy.root)

    result = copy.run("--json")
    assert result.code == 0, result.stderr
    b = result.stage("b")
    assert (b["action"], b["batches_run"]) == ("resume", 3)
    assert copy.calls() == ["b 3", "b 4", "b 5", "c all"]
    assert_matches_clean(copy, clean)
    assert project.record("b")["status"] == "running"  # the original is untouched


# ---------------------------------------------------------------- 10. O(1) checkpoints


def test_checkpoint_appends_to_journal_instead_of_rewriting_the_record(project, procs, clean):
    kill_at(project, procs, "b:3")
    rec = project.record("b")
    assert rec["batches"] == []  # as written when the stage started
    first_journal = rec["journal"]
    entries = journal_lines(project, "b")
    assert [e["index"] for e in entries] == [0, 1, 2]
    assert [e["file"] for e in entries] == [f"b/batches/batch-{i:06d}.parquet" for i in range(3)]

    # The resumed attempt writes its record once (listing the kept batches), then journals.
    kill_at(project, procs, "b:5")
    rec = project.record("b")
    assert rec["status"] == "running"
    assert [b["index"] for b in rec["batches"]] == [0, 1, 2]
    assert rec["journal"] != first_journal
    assert not (project.artifacts / "b" / first_journal).exists()
    assert [e["index"] for e in journal_lines(project, "b")] == [3, 4]

    result = project.run("--json")
    assert result.code == 0, result.stderr
    assert result.stage("b")["batches_run"] == 1
    assert project.calls() == ["b 5", "c all"]
    assert_matches_clean(project, clean)
