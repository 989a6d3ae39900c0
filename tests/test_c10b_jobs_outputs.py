"""`-j N`: the same outputs as one stage at a time; stages really run at once; a stage never
starts before its input stages are done. The CLI runs as a subprocess on real projects."""

from __future__ import annotations

import shutil
from pathlib import Path

from c10b_support import built_state, jobs_project
from conftest import REPO, Project

# A fan-out (one root, four generate stages seeded by it, a run stage beside them) and a
# fan-in (a transform over all of them, a run stage after it): with -j 4, many stages are ready
# at once. Export copies and run outputs are compared too.
FAN = """
workflow: demo
stages:
  root:
    generate: code/jobs.py:rows
    num_records: 12
    batch_size: 4
  b1: {generate: code/jobs.py:rows, seed: root, num_records: 30, batch_size: 7,
       outputs: [exports/b1.parquet]}
  b2: {generate: code/jobs.py:rows, seed: root, batch_size: 5, params: {k: 2}}
  b3: {generate: code/jobs.py:rows, seed: root, num_records: 9, batch_size: 2,
       processors: [{filter: "id % 2 == 0"}]}
  b4: {generate: code/jobs.py:rows, num_records: 25, batch_size: 10, sampling: shuffle,
       seed: root, outputs: [exports/b4.jsonl]}
  side:
    run: "mkdir -p out && cp -r {inputs[root]} out/root && echo side > out/side.txt"
    inputs: [root]
    outputs: [out]
  fanin:
    transform: code/jobs.py:check_inputs
    inputs: [b1, b2, b3, b4, side]
    outputs: [exports/fanin.csv]
  last:
    run: "mkdir -p final && cat {inputs[fanin]}/*.parquet > {outputs[0]}"
    inputs: [fanin]
    outputs: [final/fanin.bytes]
"""
FAN_FILES = ("exports", "out", "final")


def _built(root: Path, *args: str) -> tuple[dict, list[dict]]:
    proj = Project(root)
    result = proj.run("--json", *args)
    assert result.code == 0, result.stderr
    return built_state(root, "demo", FAN_FILES), result.json()["stages"]


def test_fan_out_fan_in_outputs_are_the_same_with_j1_and_j4(tmp_path: Path) -> None:
    serial = jobs_project(tmp_path / "serial", FAN)
    at_once = jobs_project(tmp_path / "at-once", FAN)
    one, one_doc = _built(serial.root, "-j", "1")
    four, four_doc = _built(at_once.root, "-j", "4")
    assert one == four
    assert set(one) >= {"root", "b1", "b2", "b3", "b4", "side", "fanin", "last", *FAN_FILES}
    # --json: the same shape, the stages in plan order, the same results and rows
    assert [(s["stage"], s["result"], s["rows"]) for s in one_doc] == \
        [(s["stage"], s["result"], s["rows"]) for s in four_doc]
    assert [sorted(s) for s in one_doc] == [sorted(s) for s in four_doc]
    # a null build under -j 4 is a null build
    again = at_once.run("--json", "-j", "4")
    assert {s["result"] for s in again.json()["stages"]} == {"up_to_date"}


def test_example_outputs_are_the_same_with_j1_and_j4(tmp_path: Path) -> None:
    states = []
    for jobs in ("1", "4"):
        proj = Project(tmp_path / f"example-{jobs}")
        shutil.copytree(REPO / "examples", proj.root / "examples")
        shutil.copy(REPO / "Workflowfile.example", proj.root / "Workflowfile")
        result = proj.run("--json", "-j", jobs)
        assert result.code == 0, result.stderr
        states.append(built_state(proj.root, "persona-conversations", ("reports",)))
    assert states[0] == states[1]
    assert len(states[0]) == 6  # five stages and the report


MEET = """
workflow: demo
stages:
  x: {generate: code/jobs.py:meet, num_records: 4, batch_size: 2, params: {other: y}}
  y: {generate: code/jobs.py:meet, num_records: 4, batch_size: 2, params: {other: x}}
  after: {transform: code/jobs.py:check_inputs, inputs: [x, y]}
"""


def test_two_stages_run_at_once_under_j2(tmp_path: Path) -> None:
    """x waits in its first batch until y has begun, and y until x has: both complete only
    when they run at the same time."""
    proj = jobs_project(tmp_path / "p", MEET)
    result = proj.run("--json", "-j", "2")
    assert result.code == 0, result.stderr
    assert {s["stage"]: s["result"] for s in result.json()["stages"]} == \
        {"x": "completed", "y": "completed", "after": "completed"}


def test_one_at_a_time_the_meeting_stages_cannot_both_finish(tmp_path: Path) -> None:
    """The test above can fail: one stage at a time, x waits for y in vain."""
    proj = jobs_project(tmp_path / "p", MEET)
    result = proj.run("--json", "-j", "1", "-k", WAIT_S="1")
    assert result.code == 1
    assert result.stage("x")["result"] == "failed"
    assert "did not appear" in result.stage("x")["error"]
    assert result.stage("after")["result"] == "not_run"


def test_workflowfile_jobs_runs_stages_at_once_and_j1_overrides_it(tmp_path: Path) -> None:
    proj = jobs_project(tmp_path / "p", "jobs: 2\n" + MEET)
    assert proj.run("-q").code == 0
    other = jobs_project(tmp_path / "q", "jobs: 2\n" + MEET)
    assert other.run("-q", "-j", "1", WAIT_S="1").code == 1


def test_a_run_stage_and_a_python_stage_run_at_once(tmp_path: Path) -> None:
    wf = """
    workflow: demo
    stages:
      py: {generate: code/jobs.py:meet, num_records: 2, batch_size: 1, params: {other: sh}}
      sh:
        run: >-
          mkdir -p marks && touch marks/sh-in &&
          for i in $(seq 600); do [ -f marks/py-in ] && break; sleep 0.05; done &&
          test -f marks/py-in && echo ok > {outputs}
        outputs: [sh.txt]
    """
    proj = jobs_project(tmp_path / "p", wf)
    result = proj.run("--json", "-j", "2")
    assert result.code == 0, result.stderr
    assert (proj.root / "sh.txt").read_text() == "ok\n"


DIAMOND = """
workflow: demo
stages:
  a: {generate: code/jobs.py:rows, num_records: 40, batch_size: 5}
  b: {generate: code/jobs.py:rows, num_records: 30, batch_size: 5}
  c: {generate: code/jobs.py:rows, num_records: 20, batch_size: 5}
  ab: {transform: code/jobs.py:check_inputs, inputs: [a, b]}
  bc: {transform: code/jobs.py:check_inputs, inputs: [b, c]}
  all: {transform: code/jobs.py:check_inputs, inputs: [ab, bc, a]}
  gen: {generate: code/jobs.py:rows, seed: ab, batch_size: 1}
  cmd:
    run: "test -f artifacts/demo/all/stage.json && grep -q '\\"completed\\"' artifacts/demo/all/stage.json && echo ok > {outputs}"
    inputs: [all]
    outputs: [cmd.txt]
"""


def test_a_stage_never_starts_before_its_input_stages_are_done(tmp_path: Path) -> None:
    """Each transform checks, as it runs, that every input stage's record is `completed`
    (the run stage checks its input's record); with -j 8 every ready stage starts at once."""
    proj = jobs_project(tmp_path / "p", DIAMOND)
    for attempt in range(3):  # three builds from scratch: three schedules
        result = proj.run("--json", "-j", "8", "--resume", "never")
        assert result.code == 0, (attempt, result.stderr)
        assert {s["result"] for s in result.json()["stages"]} == {"completed"}


def test_early_cutoff_under_j(tmp_path: Path) -> None:
    """A stage that reruns with the same output leaves the stages after it up to date (they
    are decided again once it is done); one with a new output reruns the next one, and so
    on down."""
    wf = """
    workflow: demo
    stages:
      a: {generate: code/a.py:rows, num_records: 4, batch_size: 2}
      other: {generate: code/jobs.py:rows, num_records: 4, batch_size: 2}
      b: {generate: code/jobs.py:rows, seed: a, batch_size: 2}
      c: {transform: code/jobs.py:check_inputs, inputs: [b, other]}
    """
    proj = jobs_project(tmp_path / "p", wf)
    proj.write("code/a.py", "def rows(ctx):\n    return [{'id': ctx.offset + i} for i in range(ctx.size)]\n")
    assert proj.run("-q", "-j", "4").code == 0
    proj.write("code/a.py", "# a comment\n" + (proj.root / "code/a.py").read_text())
    result = proj.run("--json", "-j", "4")
    assert result.code == 0, result.stderr
    assert {s["stage"]: s["result"] for s in result.json()["stages"]} == \
        {"a": "completed", "other": "up_to_date", "b": "up_to_date", "c": "up_to_date"}
    proj.write("code/a.py", (proj.root / "code/a.py").read_text().replace("ctx.offset + i",
                                                                          "ctx.offset + i + 1"))
    result = proj.run("--json", "-j", "4")
    # b reruns on a's new rows; its own rows do not show the seed's (jobs.py): c stays
    assert {s["stage"]: s["result"] for s in result.json()["stages"]} == \
        {"a": "completed", "other": "up_to_date", "b": "completed", "c": "up_to_date"}


CONCURRENT = """
workflow: demo
stages:
  c1: {generate: code/jobs.py:rows, num_records: 40, batch_size: 2, concurrency: 4}
  c2: {generate: code/jobs.py:rows, num_records: 30, batch_size: 3, concurrency: 8}
  c3: {generate: code/jobs.py:rows, seed: c1, batch_size: 5, concurrency: 2}
  join: {transform: code/jobs.py:check_inputs, inputs: [c2, c3]}
"""


def test_j_with_batches_in_flight_gives_the_serial_outputs_and_logs(tmp_path: Path) -> None:
    """-j 3 with stages that keep several batches in flight (batch threads inherit their
    stage's log): the outputs of -j 1 at concurrency 1, and each print in its stage's log."""
    # `retries` in place of `concurrency`: neither is part of the fingerprint
    serial = jobs_project(tmp_path / "serial", CONCURRENT.replace("concurrency", "retries"))
    assert serial.run("-q", "-j", "1").code == 0
    at_once = jobs_project(tmp_path / "at-once", CONCURRENT)
    result = at_once.run("--json", "-j", "3")
    assert result.code == 0, result.stderr
    assert built_state(serial.root, "demo") == built_state(at_once.root, "demo")
    for name, batches in (("c1", 20), ("c2", 10), ("c3", 8)):
        lines = (at_once.artifacts / name / "log.txt").read_text().splitlines()
        want = [f"{kind} {name} {i}" for i in range(batches) for kind in ("out", "err")]
        assert sorted(lines) == sorted(want), name
