"""Shared by the c11-grow tests: a project whose generate stages log each batch they run,
and the check that a grown build equals a build from scratch, batch file by batch file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import Project

CODE = '''
import os


def _log(ctx):
    with open(os.path.join(os.path.dirname(__file__), "calls.log"), "a") as fh:
        fh.write(f"{ctx.stage_name}:{ctx.batch_index}\\n")


def plain(ctx):
    _log(ctx)
    return [{"i": ctx.offset + k, "r": ctx.rng.random()} for k in range(ctx.size)]


def counts(ctx):
    _log(ctx)
    return [{"i": ctx.offset + k, "of": ctx.num_records} for k in range(ctx.size)]


def seeded(ctx):
    _log(ctx)
    return [{"x": row["x"], "y": row["x"] * 2 + ctx.rng.randint(0, 9)}
            for row in ctx.seed_rows.to_pylist()]
'''


def write_seed(proj: Project, rel: str, n: int, start: int = 0) -> None:
    path = proj.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": list(range(start, start + n))}), path)


def batch_digests(proj: Project, stage: str) -> tuple[list[tuple[int, str]], str]:
    rec = proj.record(stage)
    return [(b["index"], b["digest"]) for b in rec["batches"]], rec["output"]["digest"]


def from_scratch(proj: Project, tmp: Path) -> Project:
    """A copy of the project without its artifacts, built."""
    other = Project(tmp)
    shutil.copytree(proj.root, other.root, ignore=shutil.ignore_patterns("artifacts"))
    (other.root / "code" / "calls.log").unlink(missing_ok=True)
    result = other.run("-q")
    assert result.code == 0, result.stderr
    return other


def same_as_scratch(proj: Project, tmp: Path, *stages: str) -> None:
    other = from_scratch(proj, tmp)
    for stage in stages:
        assert batch_digests(proj, stage) == batch_digests(other, stage), stage
        files = sorted(p.name for p in (proj.artifacts / stage / "batches").iterdir())
        assert files == sorted(p.name for p in (other.artifacts / stage / "batches").iterdir())


def ran(proj: Project, stage: str) -> list[int]:
    calls = [c.split(":") for c in proj.calls()]
    return sorted(int(i) for s, i in calls if s == stage)


def decision(result: Any, stage: str) -> dict[str, Any]:
    return result.stage(stage)
