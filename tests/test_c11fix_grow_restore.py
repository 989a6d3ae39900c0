"""A grow or shrink whose resulting trace the build cache holds is restored even when no
other stage of the build runs (the cache was looked at only when one did), and a restore
that finds a damaged object leaves the stage as it was, so it does what it would have done
without the cache (the restore had cleared its folder first: the batches a shrink would
have kept were gone, and the stage failed). Real CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from c11grow_support import ran, same_as_scratch
from conftest import Project

CODE = '''
import os


def plain(ctx):
    with open(os.path.join(os.path.dirname(__file__), "calls.log"), "a") as fh:
        fh.write(f"{ctx.stage_name}:{ctx.batch_index}\\n")
    return [{"i": ctx.offset + k, "r": ctx.rng.random()} for k in range(ctx.size)]
'''
FLOW = """
workflow: demo
stages:
  a:
    generate: code/stages.py:plain
    num_records: {n}
    batch_size: 2
"""


@pytest.fixture
def proj(tmp_path: Path) -> Project:
    p = Project(tmp_path / "proj")
    p.write("code/stages.py", CODE)
    return p


def _build(proj: Project, n: int) -> dict:
    proj.write("Workflowfile", FLOW.format(n=n))
    proj.clear_calls()
    result = proj.run("--json")
    assert result.code == 0, result.stderr
    return result.stage("a")


def test_a_lone_stage_grown_or_shrunk_back_is_restored(proj: Project, tmp_path: Path) -> None:
    assert _build(proj, 8)["action"] == "run"
    assert _build(proj, 12)["action"] == "grow"
    for n in (8, 12):
        a = _build(proj, n)
        assert (a["action"], a["result"], a["batches_run"]) == ("restore", "restored", 0), a
        assert proj.calls() == []
    same_as_scratch(proj, tmp_path / "fresh", "a")


def _rot(proj: Project, n: int, name: str) -> None:
    """Flip a byte of the object of batch file `name` of the entry of `n` rows, in place,
    its stat kept (a bit rot the cache's stat checks cannot see)."""
    cache = proj.root / "artifacts" / ".cache"
    for path in (cache / "entries").glob("*/*.json"):
        entry = json.loads(path.read_text())
        if entry["record"]["num_records"] != n:
            continue
        digest = next(f["digest"] for f in entry["files"] if f["path"].endswith(name))
        hexed = digest.split(":")[-1]
        (obj,) = (cache / "objects").glob(f"*/*{hexed[2:]}*")
        st = os.stat(obj)
        with open(obj, "r+b") as fh:
            fh.seek(20)
            byte = fh.read(1)
            fh.seek(20)
            fh.write(bytes([byte[0] ^ 1]))
        os.utime(obj, ns=(st.st_atime_ns, st.st_mtime_ns))
        return
    raise AssertionError(f"no entry of {n} rows")


def test_a_shrink_whose_restore_finds_a_damaged_object_keeps_its_batches(proj: Project,
                                                                         tmp_path: Path) -> None:
    """The entry's objects are checked before the restore touches the stage: a damaged one
    leaves the stage's batches in place, and the stage shrinks as without the cache."""
    _build(proj, 8)
    _build(proj, 12)
    (proj.artifacts / "a" / "batches" / "batch-000001.parquet").unlink()
    _build(proj, 12)  # batch 1 made again: its file is no longer the cache's object
    _rot(proj, 8, "batch-000001.parquet")
    proj.write("Workflowfile", FLOW.format(n=8))
    plan = proj.run("-n", "--json")
    assert plan.stage("a")["action"] == "restore"
    proj.clear_calls()
    result = proj.run("--json")
    assert result.code == 0, result.stderr
    assert "cannot be restored" in result.stderr
    a = result.stage("a")
    assert a["result"] == "completed" and ran(proj, "a") == [], (a, proj.calls())
    same_as_scratch(proj, tmp_path / "fresh", "a")
    assert proj.run("-n", "--json").stage("a")["action"] == "up_to_date"
