"""Leftovers are swept where a stage runs, and everywhere after a killed or failed holder.

A null build after a clean one does not walk every stage folder: the lock file's last line
says whether the last command that held the lock ended cleanly (`tidy`). Leftovers of a
killed command in a stage that does not run are never read (the plan is the same with and
without them), and are removed by the next build that follows the kill, or before the stage
runs.
"""

from __future__ import annotations

import signal

from conftest import Project

LEFTOVERS = (".stage.json.tmp.123.abcdef012345", "journal-20000101T000000-deadbeef.jsonl")


def plant(project: Project, stage: str) -> list:
    folder = project.artifacts / stage
    paths = [folder / name for name in LEFTOVERS]
    for path in paths:
        path.write_text("{}")
    return paths


def lock_lines(project: Project) -> list[str]:
    return (project.artifacts / ".lock").read_text().split()


def test_a_clean_build_marks_the_lock_tidy_and_a_null_build_walks_no_stage_folder(
        project: Project) -> None:
    assert project.run().code == 0
    assert lock_lines(project)[2:] == ["tidy"]
    before = project.run("-n", "--json").json()
    planted = plant(project, "a")  # as if left by a kill the lock file does not know of
    assert project.run("-n", "--json").json() == before  # never read
    result = project.run("--json")
    assert {s["result"] for s in result.json()["stages"]} == {"up_to_date"}
    assert all(p.exists() for p in planted)  # a null build after a tidy one sweeps nothing
    assert lock_lines(project)[2:] == ["tidy"]

    result = project.run("--json", "--force", "a")  # swept before a runs
    assert result.stage("a")["result"] == "completed"
    assert not any(p.exists() for p in planted)


def test_after_a_killed_build_the_next_build_sweeps_every_stage(project: Project) -> None:
    assert project.run().code == 0
    planted = plant(project, "a") + plant(project, "c")
    root_temp = project.artifacts / ".workflow.json.tmp.1.0123456789ab"
    root_temp.write_text("{")
    proc = project.start("--force", "b", HANG_AT="b:2")
    try:
        project.wait_for("code/b-reached-2", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert lock_lines(project)[2:] == []  # killed: not tidy
    result = project.run("--json")
    assert result.code == 0, result.stderr
    assert result.stage("a")["result"] == "up_to_date"
    assert not any(p.exists() for p in planted) and not root_temp.exists()
    assert lock_lines(project)[2:] == ["tidy"]


def test_a_lock_file_of_an_older_dd_build_means_a_full_sweep(project: Project) -> None:
    assert project.run().code == 0
    (project.artifacts / ".lock").write_text("999999\n")  # an older dd-build's lock file
    planted = plant(project, "b")
    assert project.run().code == 0
    assert not any(p.exists() for p in planted)


def test_after_a_failed_build_the_next_build_sweeps_every_stage(project: Project) -> None:
    assert project.run().code == 0
    result = project.run("--force", "b", FAIL_AT="b:1")
    assert result.code != 0
    assert lock_lines(project)[2:] == []  # a failure may leave what a kill leaves
    planted = plant(project, "a")
    assert project.run().code == 0
    assert not any(p.exists() for p in planted)
    assert lock_lines(project)[2:] == ["tidy"]


def test_another_command_after_a_kill_does_not_mark_the_lock_tidy(project: Project) -> None:
    # `clean` takes the lock but sweeps nothing: the leftovers of the kill before it are
    # still the next build's to sweep.
    assert project.run().code == 0
    planted = plant(project, "a")
    (project.artifacts / ".lock").write_text("999999\n1.0\n")  # a killed holder's
    assert project.run("clean", "c").code == 0
    assert lock_lines(project)[2:] == []
    assert all(p.exists() for p in planted)
    assert project.run().code == 0
    assert not any(p.exists() for p in planted)


def test_an_unlisted_override_file_is_never_read(project: Project) -> None:
    assert project.run().code == 0
    before = project.run("-n", "--json").json()
    shown = project.run("show", "b", "--json").json()
    stray = project.artifacts / "b" / "override" / "review.parquet"
    stray.parent.mkdir()
    stray.write_bytes(b"PAR1 not a table")
    assert project.run("-n", "--json").json() == before
    assert project.run("show", "b", "--json").json() == shown


def test_a_build_of_some_targets_after_a_kill_leaves_the_sweep_of_the_rest_pending(
        project: Project) -> None:
    assert project.run().code == 0
    planted = plant(project, "c")
    (project.artifacts / ".lock").write_text("999999\n1.0\n")  # a killed holder's
    assert project.run("b").code == 0  # c is not in this build
    assert all(p.exists() for p in planted)
    assert lock_lines(project)[2:] == []  # still untidy: c's folder was not swept
    assert project.run().code == 0
    assert not any(p.exists() for p in planted)
    assert lock_lines(project)[2:] == ["tidy"]
