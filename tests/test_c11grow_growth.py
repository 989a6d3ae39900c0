"""Issue 11 item 2: growth is incremental. Real CLI on temp projects."""

from __future__ import annotations

from pathlib import Path

import pytest
from c11grow_support import CODE, ran, same_as_scratch, write_seed
from conftest import Project

PLAIN = """
workflow: demo
stages:
  gen:
    generate: code/stages.py:plain
    num_records: {n}
    batch_size: 20
{extra}
"""


def _plain(proj: Project, n: int, extra: str = "") -> None:
    proj.write("Workflowfile", PLAIN.format(n=n, extra=extra))


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    p = Project(tmp_path / "proj")
    p.write("code/stages.py", CODE)
    return p


def _build(proj: Project, *args: str) -> None:
    proj.clear_calls()
    result = proj.run("-q", *args)
    assert result.code == 0, result.stderr


def test_grow_runs_only_the_new_batches_and_equals_a_fresh_build(proj: Project, tmp_path: Path
                                                                  ) -> None:
    _plain(proj, 600)
    _build(proj)
    _plain(proj, 700)
    plan = proj.run("-n", "--json", "--explain")
    stage = plan.stage("gen")
    assert stage["action"] == "grow"
    reason = stage["reasons"][0]
    assert reason["code"] == "spec_changed" and reason["key"] == "num_records"
    assert (reason["old"], reason["new"], reason["batches_kept"]) == (600, 700, 30)
    assert "600 → 700" in reason["message"] and "30 of 35 batches kept" in reason["message"]
    assert "grow (30 of 35 batches kept)" in plan.stderr
    _build(proj)
    assert ran(proj, "gen") == list(range(30, 35))
    assert proj.record("gen")["batches_run"] == 5
    same_as_scratch(proj, tmp_path / "fresh700", "gen")


def test_shrink_runs_none_and_grow_again_runs_only_new(proj: Project, tmp_path: Path) -> None:
    _plain(proj, 700)
    _build(proj)
    _plain(proj, 600)
    plan = proj.run("-n", "--json")
    assert plan.stage("gen")["action"] == "shrink"
    _build(proj)
    assert ran(proj, "gen") == []
    same_as_scratch(proj, tmp_path / "fresh600", "gen")
    assert len(list((proj.artifacts / "gen" / "batches").iterdir())) == 30
    _plain(proj, 660)
    _build(proj)
    assert ran(proj, "gen") == [30, 31, 32]
    same_as_scratch(proj, tmp_path / "fresh660", "gen")


def test_partial_last_batch_is_regenerated_or_trimmed(proj: Project, tmp_path: Path) -> None:
    _plain(proj, 605)  # last batch (30) holds 5 rows
    _build(proj)
    _plain(proj, 610)  # its size changes: it runs again
    _build(proj)
    assert ran(proj, "gen") == [30]
    same_as_scratch(proj, tmp_path / "f610", "gen")
    _plain(proj, 600)  # batch 30 goes; none runs
    _build(proj)
    assert ran(proj, "gen") == []
    same_as_scratch(proj, tmp_path / "f600", "gen")
    _plain(proj, 590)  # batch 29 is now partial: it runs again
    _build(proj)
    assert ran(proj, "gen") == [29]
    same_as_scratch(proj, tmp_path / "f590", "gen")


def test_code_that_reads_num_records_reruns_everything_saying_why(proj: Project,
                                                                  tmp_path: Path) -> None:
    proj.write("Workflowfile", PLAIN.format(n=60, extra="").replace("plain", "counts"))
    _build(proj)
    assert all(b.get("reads") == ["num_records"] for b in proj.record("gen")["batches"])
    proj.write("Workflowfile", PLAIN.format(n=80, extra="").replace("plain", "counts"))
    plan = proj.run("-n", "--json")
    stage = plan.stage("gen")
    assert stage["action"] == "run"
    assert stage["reasons"][0]["reads"] == "ctx.num_records"
    assert "reads ctx.num_records" in stage["reasons"][0]["message"]
    _build(proj)
    assert ran(proj, "gen") == [0, 1, 2, 3]
    same_as_scratch(proj, tmp_path / "f80", "gen")


@pytest.mark.parametrize("fn", ["plain", "counts"])
def test_process_executor_keys_and_reads_come_back_from_workers(proj: Project, tmp_path: Path,
                                                                fn: str) -> None:
    extra = "    concurrency: 2\n    executor: process"
    proj.write("Workflowfile", PLAIN.format(n=100, extra=extra).replace("plain", fn))
    _build(proj)
    batches = proj.record("gen")["batches"]
    assert all(b["key"] for b in batches)
    assert all(bool(b.get("reads")) == (fn == "counts") for b in batches)
    proj.write("Workflowfile", PLAIN.format(n=140, extra=extra).replace("plain", fn))
    _build(proj)
    assert ran(proj, "gen") == (list(range(5, 7)) if fn == "plain" else list(range(7)))
    same_as_scratch(proj, tmp_path / "fresh", "gen")


SEEDED = """
workflow: demo
stages:
  gen:
    generate: code/stages.py:seeded
    seed: {seed}
    batch_size: 10
  more:
    generate: code/stages.py:seeded
    seed: gen
    batch_size: 10
"""


def test_seed_from_files_grows_only_batches_whose_rows_changed(proj: Project, tmp_path: Path
                                                               ) -> None:
    proj.write("Workflowfile", SEEDED.format(seed="data/seed.parquet"))
    write_seed(proj, "data/seed.parquet", 100)
    _build(proj)
    write_seed(proj, "data/seed.parquet", 125)  # 25 rows appended
    plan = proj.run("-n", "--json", "--explain")
    assert plan.stage("gen")["action"] == "resume"
    assert plan.stage("gen")["reasons"][0]["seed_checked"] is True
    _build(proj)
    assert ran(proj, "gen") == [10, 11, 12]
    assert ran(proj, "more") == [10, 11, 12]  # seeded from gen, which grew too
    same_as_scratch(proj, tmp_path / "f125", "gen", "more")
    write_seed(proj, "data/seed.parquet", 95)  # shrinks: the last batch is partial now
    _build(proj)
    assert ran(proj, "gen") == [9]
    same_as_scratch(proj, tmp_path / "f95", "gen", "more")


def test_seed_row_changed_in_the_middle_reruns_that_batch_only(proj: Project, tmp_path: Path
                                                               ) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    proj.write("Workflowfile", SEEDED.format(seed="data/seed.parquet"))
    write_seed(proj, "data/seed.parquet", 50)
    _build(proj)
    values = list(range(50))
    values[23] = 999
    pq.write_table(pa.table({"x": values}), proj.root / "data/seed.parquet")
    _build(proj)
    assert ran(proj, "gen") == [2]
    same_as_scratch(proj, tmp_path / "fresh", "gen", "more")


def test_other_changes_still_rerun_everything(proj: Project) -> None:
    _plain(proj, 100)
    _build(proj)
    proj.write("Workflowfile", PLAIN.format(n=120, extra="    params: {t: 1}"))
    plan = proj.run("-n", "--json")
    assert plan.stage("gen")["action"] == "run"
    _build(proj)
    assert ran(proj, "gen") == list(range(6))


def test_status_shows_the_growth(proj: Project) -> None:
    _plain(proj, 100)
    _build(proj)
    _plain(proj, 140)
    status = proj.run("status", "--json")
    stage = status.stage("gen")
    assert stage["action"] == "grow" and stage["batches_kept"] == 5
    text = proj.run("status").stdout + proj.run("status").stderr
    assert "grow (5 of 7 batches kept)" in text


WHOLE = '''
import os


def whole(ctx):
    with open(os.path.join(os.path.dirname(__file__), "calls.log"), "a") as fh:
        fh.write(f"{ctx.stage_name}:{ctx.batch_index}\\n")
    import pyarrow.parquet as pq
    total = pq.read_table(ctx.inputs["data/seed.parquet"]).num_rows
    return [{"x": row["x"], "of": total} for row in ctx.seed_rows.to_pylist()]
'''


def test_code_that_reads_the_whole_seed_through_inputs_reruns_everything(
        proj: Project, tmp_path: Path) -> None:
    proj.write("code/whole.py", WHOLE)
    proj.write("Workflowfile", SEEDED.format(seed="data/seed.parquet")
               .replace("code/stages.py:seeded", "code/whole.py:whole", 1))
    write_seed(proj, "data/seed.parquet", 30)
    _build(proj)
    assert all(b.get("reads") == ["seed"] for b in proj.record("gen")["batches"])
    write_seed(proj, "data/seed.parquet", 40)
    plan = proj.run("-n", "--json")
    assert plan.stage("gen")["action"] == "run"
    assert "whole seed" in plan.stage("gen")["reasons"][0]["message"]
    _build(proj)
    assert ran(proj, "gen") == [0, 1, 2, 3]
    same_as_scratch(proj, tmp_path / "fresh", "gen", "more")
