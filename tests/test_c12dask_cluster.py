"""Builds on a real Dask cluster (the one .ci/run starts: a scheduler and two workers, each in
a folder of its own): the example and a fan-out/fan-in workflow give the bytes a local serial
build gives; a rate limit holds across both workers; what stage code prints reaches the
stage's log; a failure points at the user's line; -v shows each batch."""

from __future__ import annotations

import shutil
from pathlib import Path

from c10b_support import built_state, jobs_project
from c12dask_support import ADDRESS, needs_cluster
from conftest import REPO, Project
from test_c10b_jobs_outputs import FAN, FAN_FILES

pytestmark = needs_cluster


def _dask(proj: Project, *args: str) -> None:
    assert ADDRESS is not None
    result = proj.run("--scheduler", ADDRESS, *args)
    assert result.code == 0, result.stderr
    assert f"dask: connected to {ADDRESS}" in result.stderr


def test_the_example_on_the_cluster_is_byte_identical_to_a_local_serial_build(
        tmp_path: Path) -> None:
    states = []
    for where in ("local", "dask"):
        proj = Project(tmp_path / where)
        shutil.copytree(REPO / "examples", proj.root / "examples")
        shutil.copy(REPO / "Workflowfile.example", proj.root / "Workflowfile")
        if where == "dask":
            _dask(proj)
        else:
            assert proj.run("-j", "1").code == 0
        states.append(built_state(proj.root, "persona-conversations", ("reports",)))
    assert states[0] == states[1]
    assert len(states[0]) == 6


def test_a_fan_out_with_batches_in_flight_is_byte_identical_to_a_local_serial_build(
        tmp_path: Path) -> None:
    text = FAN.replace("batch_size: 7,", "batch_size: 7, concurrency: 4,")
    text = text.replace("batch_size: 2,", "batch_size: 2, concurrency: 3,")
    assert text.count("concurrency") == 2
    serial = jobs_project(tmp_path / "serial", text)
    on_dask = jobs_project(tmp_path / "dask", text)
    assert serial.run("-j", "1").code == 0
    _dask(on_dask, "-j", "3")
    assert built_state(serial.root, "demo", FAN_FILES) == \
        built_state(on_dask.root, "demo", FAN_FILES)
    # what the code printed on the workers is in each stage's log, as in a local build
    log = (on_dask.artifacts / "b1" / "log.txt").read_text().splitlines()
    assert sorted(log) == sorted([f"out b1 {i}" for i in range(5)] +
                                 [f"err b1 {i}" for i in range(5)])
    again = on_dask.run("--scheduler", ADDRESS or "", "--json")
    assert {s["result"] for s in again.json()["stages"]} == {"up_to_date"}
    assert "dask" not in again.stderr  # a null build never connects


LIMITED = """
workflow: demo
rate_limits:
  api: {requests_per_second: 10, max_in_flight: 2}
stages:
  calls:
    generate: code/calls.py:make
    num_records: 30
    batch_size: 3
    concurrency: 6
    rate_limit: api
"""
CALLS = """
import os, socket, time

def make(ctx):
    rows = []
    for k in range(ctx.size):
        with ctx.request():
            start = time.time()
            time.sleep(0.03)
            end = time.time()
        rows.append({"i": ctx.offset + k, "start": start, "end": end,
                     "worker": f"{socket.gethostname()}:{os.getpid()}"})
    return rows
"""


def test_a_rate_limit_holds_across_both_workers(tmp_path: Path) -> None:
    proj = Project(tmp_path)
    proj.write("code/calls.py", CALLS)
    proj.write("Workflowfile", LIMITED)
    _dask(proj)
    rows = proj.table("calls").to_pylist()
    assert len(rows) == 30
    assert len({r["worker"] for r in rows}) == 2  # both workers made requests
    # max_in_flight: 2 — never three requests at once, across the workers
    events = sorted([(r["start"], 1) for r in rows] + [(r["end"], -1) for r in rows])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= 2
    # requests_per_second: 10 — in any window of 1 s, at most 10 + 1 starts (a burst of one)
    starts = sorted(r["start"] for r in rows)
    assert max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts) <= 11


RAISES = """
workflow: demo
stages:
  bad:
    generate: code/bad.py:make
    num_records: 4
    batch_size: 2
    concurrency: 2
  shaped:
    transform: code/bad.py:shape
    inputs: [data/notes.txt]
"""
BAD = """
def make(ctx):
    if ctx.batch_index == 1:
        raise ValueError("no good")
    return [{"i": ctx.offset}]


def shape(ctx):
    with open(ctx.inputs["data/notes.txt"]) as f:
        return [{"line": line.strip()} for line in f]
"""


def test_a_failure_on_a_worker_points_at_the_users_line_and_the_next_build_resumes(
        tmp_path: Path) -> None:
    proj = Project(tmp_path)
    proj.write("code/bad.py", BAD)
    proj.write("data/notes.txt", "one\ntwo\n")
    proj.write("Workflowfile", RAISES)
    result = proj.run("--scheduler", ADDRESS or "", "-k")
    assert result.code == 1
    assert "batch 1 raised ValueError: no good" in result.stderr
    assert "code/bad.py:4" in result.stderr  # where it raised
    assert "ValueError: no good" in (proj.artifacts / "bad" / "log.txt").read_text()
    record = proj.record("bad")
    assert record["status"] == "failed" and [b["index"] for b in record["batches"]] == [0]
    # a transform on the cluster reads a file input at its path (the workers see it here)
    assert proj.record("shaped")["status"] == "completed"
    assert proj.table("shaped").column("line").to_pylist() == ["one", "two"]


def test_verbose_progress_shows_each_batch_of_a_stage_on_the_cluster(tmp_path: Path) -> None:
    proj = Project(tmp_path)
    proj.write("code/calls.py", CALLS)
    proj.write("Workflowfile", LIMITED.replace("rate_limit: api", "").replace(
        "num_records: 30", "num_records: 9"))
    result = proj.run("--scheduler", ADDRESS or "", "-v")
    assert result.code == 0, result.stderr
    for done in (1, 2, 3):
        assert f"calls: {done} of 3 batches done" in result.stderr, result.stderr


LAZY = """
workflow: demo
stages:
  gen:
    generate: code/gen.py:rows
    num_records: 6
    batch_size: 2
  shaped:
    transform: code/gen.py:shape
    inputs: [gen]
"""
GEN = """
def rows(ctx):
    from code import helper  # a lazy import: it runs on the worker, not here
    return [{"i": ctx.offset + k, "v": helper.VALUE} for k in range(ctx.size)]


def shape(ctx):
    import code.shaper
    return [{"i": r["i"], "w": code.shaper.scale(r["v"])} for r in ctx.inputs["gen"].to_pylist()]
"""


def test_a_module_imported_lazily_on_the_workers_is_the_stages_code(tmp_path: Path) -> None:
    """Edited between two builds on the same workers (which imported the old one): the stage
    reruns, says why, and the workers run the edit."""
    proj = Project(tmp_path)
    proj.write("code/__init__.py", "")
    proj.write("code/gen.py", GEN)
    proj.write("code/helper.py", "VALUE = 1\n")
    proj.write("code/shaper.py", "def scale(v):\n    return 10 * v\n")
    proj.write("Workflowfile", LAZY)
    _dask(proj)
    assert set(proj.table("gen").column("v").to_pylist()) == {1}
    proj.write("code/helper.py", "VALUE = 2\n")
    proj.write("code/shaper.py", "def scale(v):\n    return 100 * v\n")
    dry = proj.run("-n", "--scheduler", ADDRESS or "")
    assert "code/helper.py changed (imported by code/gen.py)" in dry.stdout, dry.stdout
    assert "code/shaper.py changed (imported by code/gen.py)" in dry.stdout, dry.stdout
    _dask(proj)
    assert set(proj.table("gen").column("v").to_pylist()) == {2}
    assert set(proj.table("shaped").column("w").to_pylist()) == {200}
    again = proj.run("--scheduler", ADDRESS or "", "--json")
    assert {s["result"] for s in again.json()["stages"]} == {"up_to_date"}
