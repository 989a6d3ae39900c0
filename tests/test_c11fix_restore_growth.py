"""A stage restored from the build cache grows as the build that made it would: its record
keeps every batch's key (and what its code read), so the next num_records change or seed
growth runs only the new batches. Real CLI on temp projects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from c11grow_support import ran, same_as_scratch
from conftest import Project

CODE = '''
import os


def _log(ctx):
    with open(os.path.join(os.path.dirname(__file__), "calls.log"), "a") as fh:
        fh.write(f"{ctx.stage_name}:{ctx.batch_index}\\n")


def plain(ctx):
    _log(ctx)
    return [{"i": ctx.offset + k, "r": ctx.rng.random()} for k in range(ctx.size)]


def seeded(ctx):
    _log(ctx)
    return [{"i": row["i"], "y": row["r"] + ctx.rng.random()}
            for row in ctx.seed_rows.to_pylist()]


def counts(ctx):
    _log(ctx)
    return [{"i": ctx.offset + k, "of": ctx.num_records} for k in range(ctx.size)]
'''

FLOW = """
workflow: demo
stages:
  a:
    generate: code/stages.py:plain
    num_records: {n}
    batch_size: 5
  b:
    generate: code/stages.py:seeded
    seed: a
    batch_size: 5
"""


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    p = Project(tmp_path / "proj")
    p.write("code/stages.py", CODE)
    return p


def _rows(proj: Project, n: int) -> None:
    proj.write("Workflowfile", FLOW.format(n=n))


def _build(proj: Project) -> dict[str, Any]:
    proj.clear_calls()
    result = proj.run("--json")
    assert result.code == 0, result.stderr
    return {s["stage"]: s for s in result.json()["stages"]}


def _entry_records(proj: Project, stage: str) -> list[dict[str, Any]]:
    found = []
    for path in (proj.root / "artifacts" / ".cache" / "entries").glob("*/*.json"):
        entry = json.loads(path.read_text())
        if entry.get("stage") == stage:
            found.append(entry["record"])
    return found


def _restored_to_20(proj: Project) -> None:
    """a at 20 rows, grown to 25 (a grow), then back to 20: both stages restored."""
    _rows(proj, 20)
    _build(proj)
    _rows(proj, 25)
    built = _build(proj)
    assert built["a"]["action"] == "grow" and ran(proj, "a") == [4]
    _rows(proj, 20)
    built = _build(proj)
    assert (built["a"]["result"], built["b"]["result"]) == ("restored", "restored"), built
    assert proj.calls() == []


def _grows_to_30_running_only_new_batches(proj: Project, tmp_path: Path) -> None:
    _rows(proj, 30)
    plan = proj.run("-n", "--explain", "--json")
    assert plan.code == 0, plan.stderr
    a = plan.stage("a")
    assert a["action"] == "grow", a
    assert a["reasons"][0]["batches_kept"] == 4 and a["reasons"][0]["batches_total"] == 6
    assert "grow (4 of 6 batches kept)" in plan.stderr
    built = _build(proj)
    assert ran(proj, "a") == [4, 5] and ran(proj, "b") == [4, 5], proj.calls()
    assert built["a"]["batches_run"] == 2 and built["b"]["batches_run"] == 2
    same_as_scratch(proj, tmp_path / "fresh30", "a", "b")


def test_a_restored_record_keeps_the_batch_keys_the_build_wrote(proj: Project) -> None:
    _restored_to_20(proj)
    for stage in ("a", "b"):
        record = proj.record(stage)
        assert record["extra"]["restored"], stage
        as_built = [r for r in _entry_records(proj, stage) if r["num_records"] == 20]
        assert as_built, stage
        keys = [(b["index"], b["key"], b.get("reads")) for b in as_built[0]["batches"]]
        assert all(k for _, k, _ in keys), stage
        assert [(b["index"], b.get("key"), b.get("reads")) for b in record["batches"]] == keys


def test_growth_after_a_restore_runs_only_the_new_batches(proj: Project, tmp_path: Path
                                                           ) -> None:
    _restored_to_20(proj)
    _grows_to_30_running_only_new_batches(proj, tmp_path)


def test_growth_after_clean_all_and_a_restoring_build_runs_only_new(proj: Project,
                                                                    tmp_path: Path) -> None:
    _rows(proj, 20)
    _build(proj)
    cleaned = proj.run("clean", "--all")
    assert cleaned.code == 0, cleaned.stderr
    built = _build(proj)
    assert (built["a"]["result"], built["b"]["result"]) == ("restored", "restored"), built
    assert proj.calls() == []
    _grows_to_30_running_only_new_batches(proj, tmp_path)


def test_a_restored_stage_that_reads_num_records_still_reruns_every_batch(proj: Project
                                                                           ) -> None:
    """What the code read is kept with the keys: growth stays off for such a stage."""
    flow = "workflow: demo\nstages:\n  c:\n    generate: code/stages.py:counts\n" \
           "    num_records: {n}\n    batch_size: 5\n"
    for n in (10, 15, 10):
        proj.write("Workflowfile", flow.format(n=n))
        _build(proj)
    assert proj.record("c")["extra"]["restored"]
    # (the stage's code logs its name too: that read is kept beside it)
    assert all("num_records" in b.get("reads", []) for b in proj.record("c")["batches"])
    proj.write("Workflowfile", flow.format(n=20))
    built = _build(proj)
    assert built["c"]["action"] == "run" and ran(proj, "c") == [0, 1, 2, 3]
    assert built["c"]["reasons"][0]["reads"] == "ctx.num_records"


def test_a_record_without_batch_keys_says_why_every_batch_runs(proj: Project) -> None:
    """A record an older dd-build wrote has no batch keys: growth cannot keep a batch, and
    the reason says so instead of a bare `num_records changed`."""
    _rows(proj, 20)
    _build(proj)
    path = proj.artifacts / "a" / "stage.json"
    record = json.loads(path.read_text())
    for batch in record["batches"]:
        del batch["key"]
    path.write_text(json.dumps(record))
    _rows(proj, 30)
    plan = proj.run("-n", "--explain", "--json")
    a = plan.stage("a")
    assert a["action"] == "run"
    assert "before dd-build kept batch keys" in a["reasons"][0]["message"]
    assert "every batch runs again" in plan.stderr
    _build(proj)
    assert ran(proj, "a") == list(range(6))
