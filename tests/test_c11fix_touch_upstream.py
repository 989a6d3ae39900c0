"""`dd-build touch` never accepts an upstream stage's output other than the one a stage was
built from: it refuses (exit 2, saying why, nothing written) when an upstream will be
restored from the cache, will run, or already has another output (rebuilt, or a review set
on it) — with or without `-n`. Real CLI on temp projects."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import Project

A_CODE = '''
def plain(ctx):
    return [{"i": ctx.offset + k, "r": ctx.rng.random()} for k in range(ctx.size)]
'''
B_CODE = '''
def seeded(ctx):
    return [{"i": row["i"], "y": ctx.rng.random()} for row in ctx.seed_rows.to_pylist()]
'''
FLOW = """
workflow: demo
stages:
  a:
    generate: code/a.py:plain
    num_records: {n}
    batch_size: 5
  b:
    generate: code/b.py:seeded
    seed: a
    batch_size: 5
"""


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    p = Project(tmp_path / "proj")
    p.write("code/a.py", A_CODE)
    p.write("code/b.py", B_CODE)
    return p


def _rows(proj: Project, n: int) -> None:
    proj.write("Workflowfile", FLOW.format(n=n))


def _ok(proj: Project, *args: str) -> None:
    result = proj.run("-q", *args)
    assert result.code == 0, result.stderr


def _cosmetic_edit_of_b(proj: Project) -> None:
    path = proj.root / "code" / "b.py"
    path.write_text(path.read_text() + "\n# a comment\n")


def _refused(proj: Project, stage: str, *why: str) -> None:
    """`touch STAGE` refused with and without -n, text and --json; its record unchanged."""
    record = (proj.artifacts / stage / "stage.json").read_bytes()
    for args in (("-n",), (), ("--json",), ("-n", "--json")):
        result = proj.run("touch", stage, *args)
        assert result.code == 2, (args, result.stdout, result.stderr)
        assert "would accept" not in result.stdout + result.stderr
        text = result.json()["error"]["message"] if "--json" in args else result.stderr
        assert all(w in text for w in why), (why, text)
        if "--json" in args:
            assert result.json()["ok"] is False
    assert (proj.artifacts / stage / "stage.json").read_bytes() == record


def _rows_of(proj: Project, stage: str) -> int:
    return int(proj.record(stage)["output"]["rows"])


def test_touch_is_refused_when_an_upstream_will_be_restored(proj: Project) -> None:
    """a built at 25 then 30 rows (the cache holds both); a set back to 25 is planned
    `restore`: b, built from a's 30 rows, cannot be touched."""
    _rows(proj, 25)
    _ok(proj)
    _rows(proj, 30)
    _ok(proj)
    _rows(proj, 25)
    _cosmetic_edit_of_b(proj)
    plan = proj.run("-n", "--json")
    assert plan.stage("a")["action"] == "restore"
    _refused(proj, "b", "upstream stage 'a'", "restored from the build cache")
    _ok(proj)
    assert _rows_of(proj, "a") == 25 and _rows_of(proj, "b") == 25  # not 30: not stale
    assert proj.run("-n", "--json").json()["stages"][1]["action"] == "up_to_date"


def test_touch_is_refused_for_an_upstream_change_alone(proj: Project) -> None:
    """a rebuilt on its own (b not yet): b's only change is a's output."""
    _rows(proj, 20)
    _ok(proj)
    _rows(proj, 30)
    _ok(proj, "a")
    _refused(proj, "b", "upstream stage 'a'", "different output")
    _cosmetic_edit_of_b(proj)  # and with a change of its own too
    _refused(proj, "b", "upstream stage 'a'", "different output")
    _ok(proj)
    assert _rows_of(proj, "b") == 30


def test_touch_is_refused_when_an_upstream_will_run(proj: Project) -> None:
    _rows(proj, 20)
    _ok(proj)
    (proj.root / "code" / "a.py").write_text(A_CODE.replace("ctx.rng.random()",
                                                            "ctx.rng.random() + 1"))
    _cosmetic_edit_of_b(proj)
    _refused(proj, "b", "upstream stage 'a' will run first")


def test_touch_is_refused_when_an_upstream_has_a_review_set(proj: Project) -> None:
    _rows(proj, 20)
    _ok(proj)
    review = proj.root / "review.parquet"
    _ok(proj, "export", "a", str(review))
    pq.write_table(pq.read_table(review).slice(0, 7), review)
    _ok(proj, "override", "a", str(review))
    _refused(proj, "b", "upstream stage 'a'", "reviewed override")
    _ok(proj)
    assert _rows_of(proj, "b") == 7


def test_touch_still_accepts_a_stage_whose_upstreams_are_as_consumed(proj: Project) -> None:
    """b's own cosmetic edit, with a up to date, and both touched together when a's is
    cosmetic too: accepted, nothing runs."""
    _rows(proj, 20)
    _ok(proj)
    _cosmetic_edit_of_b(proj)
    dry = proj.run("touch", "b", "-n")
    assert dry.code == 0 and "would accept" in dry.stdout + dry.stderr
    _ok(proj, "touch", "b")
    path = proj.root / "code" / "a.py"
    path.write_text(path.read_text() + "\n# also a comment\n")
    _cosmetic_edit_of_b(proj)
    _ok(proj, "touch", "a", "b")
    plan = proj.run("-n", "--json")
    assert [s["action"] for s in plan.json()["stages"]] == ["up_to_date", "up_to_date"]


def test_touch_is_refused_for_a_stage_the_cache_restores(proj: Project) -> None:
    """a's code changed and changed back (the cache holds a's output for it): a touch would
    record the other code's output as this code's; building restores it, running nothing."""
    _rows(proj, 20)
    _ok(proj)
    original = (proj.root / "code" / "a.py").read_text()
    (proj.root / "code" / "a.py").write_text(original.replace("ctx.rng.random()",
                                                              "ctx.rng.random() + 1"))
    _ok(proj)
    (proj.root / "code" / "a.py").write_text(original)
    assert proj.run("-n", "--json").stage("a")["action"] == "restore"
    _refused(proj, "a", "build cache holds its output", "nothing runs")
    _ok(proj)
    assert proj.run("-n", "--json").stage("a")["action"] == "up_to_date"
