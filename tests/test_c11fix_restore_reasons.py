"""A `restore` decision's reasons say what changed, never what a run would have done: no
growth add-ons (batches kept, to run, seed rows compared, the code reads ctx.num_records so
every batch runs again) and no batches of an unfinished run kept or run again. In
`--explain -n` text, `--json`, `status` and the build's own lines. Real CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Project

CODE = '''
import os


def plain(ctx):
    if os.environ.get("FAIL_AT") == f"{ctx.stage_name}:{ctx.batch_index}":
        raise RuntimeError("boom")
    return [{"i": ctx.offset + k, "r": ctx.rng.random(), "t": ctx.params.get("tag", "")}
            for k in range(ctx.size)]


def seeded(ctx):
    return [{"i": row["i"], "y": row["r"] + ctx.rng.random()}
            for row in ctx.seed_rows.to_pylist()]


def counts(ctx):
    return [{"i": ctx.offset + k, "of": ctx.num_records} for k in range(ctx.size)]
'''

FLOW = """
workflow: demo
stages:
  gen:
    generate: code/stages.py:plain
    num_records: {n}
    batch_size: 4
  judged:
    generate: code/stages.py:seeded
    seed: gen
    batch_size: 4
  calib:
    generate: code/stages.py:counts
    num_records: {n}
    batch_size: 4
"""

# Words of a run that does not happen.
RUN_WORDS = ("kept", "to run", "runs again", "run again", "seed rows", "compared as it runs",
             "called again")
GROWTH_KEYS = ("growth", "batches_kept", "batches_total", "seed_checked", "reads")


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    p = Project(tmp_path / "proj")
    p.write("code/stages.py", CODE)
    return p


def _ok(proj: Project, *args: str, **env: str) -> str:
    result = proj.run(*args, **env)
    assert result.code == 0, result.stderr
    return result.stdout + result.stderr


def _no_run_words(text: str) -> None:
    for word in RUN_WORDS:
        assert word not in text, (word, text)


def _restores(plan: Any, *stages: str) -> list[dict[str, Any]]:
    found = []
    for name in stages:
        stage = plan.stage(name)
        assert stage["action"] == "restore", stage
        assert stage["reasons"], stage
        for reason in stage["reasons"]:
            _no_run_words(reason["message"])
            assert not set(GROWTH_KEYS) & set(reason), reason
        found.append(stage)
    return found


def test_a_num_records_revert_says_only_what_changed(proj: Project) -> None:
    proj.write("Workflowfile", FLOW.format(n=16))
    _ok(proj, "-q")
    proj.write("Workflowfile", FLOW.format(n=12))
    # the same change without a cache entry: growth's words are there (the test can fail)
    grow = proj.run("-n", "--explain")
    assert "kept" in grow.stdout + grow.stderr and "runs again" in grow.stdout + grow.stderr
    _ok(proj, "-q")
    proj.write("Workflowfile", FLOW.format(n=16))
    plan = proj.run("-n", "--explain", "--json")
    assert plan.code == 0, plan.stderr
    gen, judged, calib = _restores(plan, "gen", "judged", "calib")
    assert [r["message"] for r in gen["reasons"]] == ["num_records changed: 12 → 16"]
    assert [r["message"] for r in calib["reasons"]] == ["num_records changed: 12 → 16"]
    assert [r["code"] for r in judged["reasons"]] == ["input_changed"]
    assert plan.stderr.count("restore (from cache") == 3
    _no_run_words(plan.stderr)
    text = _ok(proj, "-n", "--explain")
    assert "num_records changed: 12 → 16" in text
    _no_run_words(text)
    _no_run_words(_ok(proj, "status"))
    built = _ok(proj)
    assert built.count("restored from the cache") == 3
    _no_run_words(built)


def test_a_restore_over_a_failed_run_says_its_batches_are_discarded(proj: Project) -> None:
    flow = ("workflow: demo\nstages:\n  gen:\n    generate: code/stages.py:plain\n"
            "    num_records: 16\n    batch_size: 4\n    params: {{tag: {tag}}}\n")
    proj.write("Workflowfile", flow.format(tag="x"))
    _ok(proj, "-q")
    for fail_at, discarded in (("gen:2", 2), ("gen:0", 0)):
        proj.write("Workflowfile", flow.format(tag="y"))
        failed = proj.run("-q", FAIL_AT=fail_at)
        assert failed.code != 0
        proj.write("Workflowfile", flow.format(tag="x"))
        plan = proj.run("-n", "--explain", "--json")
        (gen,) = _restores(plan, "gen")
        last = next(r for r in gen["reasons"] if r["code"] == "failed_before")
        assert last["message"].startswith("failed last time")
        if discarded:
            assert last["batches_discarded"] == discarded
            assert "discarded because the stage is restored from the build cache" in \
                last["message"]
        else:
            assert "discarded" not in last["message"]
        _no_run_words(plan.stderr)
        built = _ok(proj, "--json")
        assert "restored from the cache" in built
