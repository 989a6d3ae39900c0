"""`-j N` with failures, -k, SIGINT/SIGTERM while several stages run, and where the output
of stage code goes when stages run at once. The CLI runs as a subprocess."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from c10b_support import built_state, jobs_project
from conftest import Project

# `fail` fails at once; `slow` (independent of it) is running when it does: it waits for the
# failed record. `dep` needs `fail`; `later` needs `slow`, and is ready only after the failure.
FAILING = """
workflow: demo
stages:
  fail: {generate: code/jobs.py:fail, num_records: 2, batch_size: 1}
  slow: {generate: code/jobs.py:rows, num_records: 3, batch_size: 1,
         params: {wait_failed: fail}}
  dep: {transform: code/jobs.py:check_inputs, inputs: [fail]}
  later: {transform: code/jobs.py:check_inputs, inputs: [slow]}
"""


def _results(result) -> dict[str, str]:
    return {s["stage"]: s["result"] for s in result.json()["stages"]}


def test_a_failure_lets_the_running_stage_finish_and_starts_no_other(tmp_path: Path) -> None:
    proj = jobs_project(tmp_path / "p", FAILING)
    result = proj.run("--json", "-j", "2")
    assert result.code == 1
    assert _results(result) == {"fail": "failed", "slow": "completed", "dep": "not_run",
                                "later": "not_run"}
    assert [s["stage"] for s in result.json()["stages"]] == ["fail", "slow", "dep", "later"]
    assert proj.record("slow")["status"] == "completed"


def test_keep_going_builds_what_does_not_need_the_failed_stage(tmp_path: Path) -> None:
    proj = jobs_project(tmp_path / "p", FAILING)
    result = proj.run("--json", "-j", "2", "-k")
    assert result.code == 1
    assert _results(result) == {"fail": "failed", "slow": "completed", "dep": "not_run",
                                "later": "completed"}
    assert "fails on purpose" in result.stage("fail")["error"]
    assert not (proj.artifacts / "dep" / "stage.json").exists()


def test_failure_text_is_one_result_line_per_stage(tmp_path: Path) -> None:
    proj = jobs_project(tmp_path / "p", FAILING)
    result = proj.run("-j", "2", "-k")
    assert result.code == 1
    for name, mark in (("fail", "✗"), ("slow", "✓"), ("later", "✓")):
        assert sum(line.startswith(f"{mark} {name}:") for line in
                   (result.stdout + result.stderr).splitlines()) == 1, (name, result)


# Two generate stages hold in their second batch until `marks/go`; a run stage sleeps
# (unless `marks/go` is there: the build after the interrupted one).
HOLDING = """
workflow: demo
stages:
  g1: {generate: code/jobs.py:rows, num_records: 6, batch_size: 1, params: {hold: true}}
  g2: {generate: code/jobs.py:rows, num_records: 4, batch_size: 1, params: {hold: true}}
  sh:
    run: "echo $$ > sh.pid && mkdir -p marks && touch marks/sh-reached && (test -f marks/go || sleep 60) && touch {outputs}"
    outputs: [sh.txt]
  after: {transform: code/jobs.py:check_inputs, inputs: [g1, g2, sh]}
"""


def _group_alive(pgid: int) -> bool:
    """A process of the group still runs (zombies, which a container's init may never reap,
    do not count)."""
    from buildtool.procgroup import group_alive

    return group_alive(pgid)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_with_three_stages_running_records_them_interrupted(
        tmp_path: Path, sig: int, code: int) -> None:
    proj = jobs_project(tmp_path / "p", HOLDING)
    proc = proj.start("--json", "-j", "4")
    try:
        for name in ("g1", "g2", "sh"):
            proj.wait_for(f"marks/{name}-reached", proc)
        proc.send_signal(sig)
        (proj.root / "marks" / "go").write_text("x")  # the batches in flight end
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    doc = json.loads(out)
    assert doc["ok"] is False
    assert doc["error"]["stage"] == "g1"  # the first running stage in plan order
    assert doc["error"]["also"] == ["g2", "sh"]  # and the others, named too
    message = doc["error"]["message"]
    assert message.startswith("interrupted in 'g1' (") and " and 'g2' (" in message
    assert message.endswith(" and 'sh'; run dd-build again to resume"), message
    for name in ("g1", "g2", "sh"):
        assert proj.record(name)["status"] == "interrupted", name
    # each Python stage kept the batches that finished: the one that held, the one before, and
    # (on a busy machine) one a stage thread began before the main thread took the signal
    for name in ("g1", "g2"):
        kept = [b["index"] for b in proj.record(name)["batches"]]
        assert kept[:2] == [0, 1] and kept == list(range(len(kept))) and len(kept) <= 3, kept
    assert not (proj.artifacts / "after" / "stage.json").exists()
    pid = int((proj.root / "sh.pid").read_text())
    assert not _group_alive(pid), "the run stage's command was left running"
    # the lock is free, and the next build resumes where each stage stopped
    again = proj.run("--json", "-j", "4", WAIT_S="60")
    assert again.code == 0, again.stderr
    runs = {s["stage"]: s["batches_run"] for s in again.json()["stages"]}
    assert runs["g1"] == 4 and runs["g2"] == 2
    fresh = jobs_project(tmp_path / "fresh", HOLDING)
    (fresh.root / "marks").mkdir()
    (fresh.root / "marks" / "go").write_text("x")
    assert fresh.run("-q", "-j", "1", "--", "g1", "g2").code == 0
    assert _batches(proj, ("g1", "g2")) == _batches(fresh, ("g1", "g2"))


def _batches(proj: Project, names: tuple[str, ...]) -> dict:
    state = built_state(proj.root, "demo")
    return {n: (state[n]["batches"], state[n]["output"]) for n in names}


SHOUTING = """
workflow: demo
stages:
  s1: {generate: code/jobs.py:meet, num_records: 6, batch_size: 1, params: {other: s2}}
  s2: {generate: code/jobs.py:meet, num_records: 6, batch_size: 1, params: {other: s1}}
  p1: {generate: code/jobs.py:rows, num_records: 8, batch_size: 1}
  p2: {generate: code/jobs.py:rows, num_records: 8, batch_size: 1, params: {fd: true}}
"""


def test_each_stage_print_lands_in_its_own_log(tmp_path: Path) -> None:
    proj = jobs_project(tmp_path / "p", SHOUTING)
    result = proj.run("--json", "-j", "4")
    assert result.code == 0, result.stderr
    json.loads(result.stdout)  # one document: nothing of the stages' output in it
    for name, batches in (("s1", 6), ("s2", 6)):
        lines = (proj.artifacts / name / "log.txt").read_text().splitlines()
        assert sorted(lines) == sorted(f"meet {name} {i}" for i in range(batches))
    for name in ("p1", "p2"):
        lines = (proj.artifacts / name / "log.txt").read_text().splitlines()
        want = [f"{kind} {name} {i}" for i in range(8) for kind in ("out", "err")]
        assert sorted(lines) == sorted(want), name
    # what p2 wrote to fd 1 directly cannot be told apart by thread: the build's shared log
    shared = (proj.artifacts / ".shared-output.txt").read_text().splitlines()
    assert sorted(shared) == sorted(f"fd p2 {i}" for i in range(8))
    assert ".shared-output.txt" in result.stderr
    again = proj.run("-j", "4", "--force", "p1")
    assert again.code == 0
    assert not (proj.artifacts / ".shared-output.txt").exists()  # nothing written this time


def test_print_of_a_serial_build_still_goes_to_the_stage_log(tmp_path: Path) -> None:
    proj = jobs_project(tmp_path / "p", SHOUTING.replace("params: {fd: true}", ""))
    result = proj.run("--json", "-j", "1", "--", "p1", "p2")
    assert result.code == 0, result.stderr
    for name in ("p1", "p2"):
        lines = (proj.artifacts / name / "log.txt").read_text().splitlines()
        assert lines == [f"{kind} {name} {i}" for i in range(8) for kind in ("out", "err")]

