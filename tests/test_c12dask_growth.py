"""Growth per batch (growth.py) on the CI Dask cluster: each batch's key and what its code read
(ctx.num_records, the whole seed through ctx.inputs) come back from the workers, so a grown
stage runs only the batches a local build would run, and equals a local build from scratch."""

from __future__ import annotations

from pathlib import Path

import pytest
from c11grow_support import CODE, ran, same_as_scratch, write_seed
from c12dask_support import ADDRESS, needs_cluster
from conftest import Project
from test_c11grow_growth import PLAIN, SEEDED, WHOLE

pytestmark = needs_cluster


def _build(proj: Project) -> None:
    assert ADDRESS is not None
    proj.clear_calls()
    result = proj.run("-q", "--scheduler", ADDRESS)
    assert result.code == 0, result.stderr


@pytest.mark.parametrize("fn", ["plain", "counts"])
def test_keys_and_reads_come_back_from_the_cluster(tmp_path: Path, fn: str) -> None:
    proj = Project(tmp_path / "proj")
    proj.write("code/stages.py", CODE)
    extra = "    concurrency: 3"
    proj.write("Workflowfile", PLAIN.format(n=100, extra=extra).replace("plain", fn))
    _build(proj)
    batches = proj.record("gen")["batches"]
    assert all(b["key"] for b in batches)
    # (the code logs its stage's name: that read comes back too, for renames)
    assert all(("num_records" in b.get("reads", [])) == (fn == "counts") for b in batches)
    proj.write("Workflowfile", PLAIN.format(n=140, extra=extra).replace("plain", fn))
    _build(proj)
    assert ran(proj, "gen") == (list(range(5, 7)) if fn == "plain" else list(range(7)))
    same_as_scratch(proj, tmp_path / "fresh", "gen")


def test_a_read_of_the_whole_seed_on_a_worker_is_seen(tmp_path: Path) -> None:
    proj = Project(tmp_path / "proj")
    proj.write("code/stages.py", CODE)
    proj.write("code/whole.py", WHOLE)
    proj.write("Workflowfile", SEEDED.format(seed="data/seed.parquet")
               .replace("code/stages.py:seeded", "code/whole.py:whole", 1))
    write_seed(proj, "data/seed.parquet", 30)
    _build(proj)
    assert all("seed" in b.get("reads", []) for b in proj.record("gen")["batches"])
    write_seed(proj, "data/seed.parquet", 40)
    _build(proj)
    assert ran(proj, "gen") == [0, 1, 2, 3]
    same_as_scratch(proj, tmp_path / "fresh", "gen", "more")
