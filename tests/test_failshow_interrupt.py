"""Ctrl-C (SIGINT) or SIGTERM during a build names the stage that was running and the batches
its record keeps, in text and in --json (issue 9, "When something fails, show where")."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
from conftest import Project

# Stage `a` of the shared CHAIN has 4 batches of 5 rows; HANG_AT=a:2 blocks in batch 2
# (batches 0 and 1 are written) after writing code/a-reached-2.


def interrupt(project: Project, signum: int, *args: str) -> tuple[int, str, str]:
    proc = project.start(*args, HANG_AT="a:2")
    project.wait_for("code/a-reached-2", proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_names_the_stage_and_the_batches_kept(project: Project, signum: int,
                                                           code: int) -> None:
    returncode, _, err = interrupt(project, signum)
    assert returncode == code
    assert err.splitlines()[-1] == \
        "interrupted in 'a' (2 of 4 batches kept); run dd-build again to resume"
    assert "Traceback" not in err


def test_an_interrupt_in_json(project: Project) -> None:
    returncode, out, err = interrupt(project, signal.SIGINT, "--json")
    assert returncode == 130
    doc = json.loads(out)
    assert doc["ok"] is False
    assert doc["error"] == {
        "message": "interrupted in 'a' (2 of 4 batches kept); run dd-build again to resume",
        "exit_code": 130, "stage": "a", "batches_kept": 2, "batches_total": 4}
    assert "interrupted in 'a'" in err  # the message is on stderr too
    assert [s["stage"] for s in doc["stages"]] == ["a", "b", "c"]


def test_the_batches_named_kept_are_kept(project: Project) -> None:
    interrupt(project, signal.SIGINT)
    project.clear_calls()
    result = project.run("--json")
    assert result.code == 0, result.stderr
    a = result.stage("a")
    assert a["action"] == "resume" and a["batches_run"] == 2
    assert sorted(project.calls()).count("a 0") == 0  # batch 0 was not called again


def test_an_interrupted_command_names_its_stage(tmp_path: Path) -> None:
    proj = Project(tmp_path / "proj")
    proj.write("Workflowfile", "workflow: demo\nstages:\n  slow:\n"
               f"    run: {sys.executable} -c \"open('reached', 'w'); "
               "import time; [time.sleep(0.05) for _ in range(6000)]\" > out.txt\n"
               "    outputs: [out.txt]\n")
    proc = proj.start("--json")
    proj.wait_for("reached", proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.splitlines()[-1] == "interrupted in 'slow'; run dd-build again to rerun it"
    error = json.loads(out)["error"]
    assert error["stage"] == "slow" and "batches_kept" not in error
