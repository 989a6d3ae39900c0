"""Run stages: declared outputs are cleared before the command runs, and an interrupted build
ends the command's whole process group (issue 7: "Hard edges", run stages and signals).

Every scenario drives the real CLI as a subprocess; a command signals where it is with marker
files and blocks while a hold file exists, so kills land at known points.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Project

# Writes out/part-1 .. out/part-N. With code/hold present it first writes code/started and its
# process group id, then waits until code/hold is removed.
PARTS = """\
import os, sys, time
from pathlib import Path

n, out = int(sys.argv[1]), Path(sys.argv[2])
if Path("code/hold").exists():
    Path("code/pgid").write_text(str(os.getpgid(0)))
    Path("code/started").write_text("x")
    while Path("code/hold").exists():
        time.sleep(0.02)
out.mkdir(parents=True, exist_ok=True)
for i in range(1, n + 1):
    (out / f"part-{i}").write_text(f"part {i} of {n}\\n")
"""

FOLDER = """
workflow: demo
stages:
  parts:
    run: python3 code/parts.py {params.n} {outputs}
    params: {n: 3}
    outputs: [out]
  count:
    run: ls {inputs} > {outputs}
    inputs: [parts]
    outputs: [count.txt]
"""

NOTHING = """
workflow: demo
stages:
  parts:
    run: COMMAND
    outputs: [OUTPUT]
"""


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Builds a test started; any still alive at the end are killed (by their own pid)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _running() -> Iterator[tuple[int, str, Path | None]]:
    """(pid, process group, working folder) of every process that runs (not zombies)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cwd: Path | None = Path(os.readlink(entry / "cwd"))
        except FileNotFoundError:  # ended meanwhile
            continue
        except PermissionError:  # another user's process: not one of ours
            cwd = None
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            yield int(entry.name), fields[2], cwd


def running_in(folder: Path) -> list[int]:
    """Pids of the processes working in `folder`: a test's commands (dd-build itself has ended)."""
    return [pid for pid, _, cwd in _running() if cwd == folder]


def group_alive(pgid: int) -> bool:
    return any(int(group) == pgid for _, group, _ in _running())


@pytest.fixture
def leftovers(project: Project) -> Iterator[None]:
    """Commands of the test still running in the project at the end are killed by pid."""
    yield
    for pid in running_in(project.root):
        if pid != os.getpid():
            os.kill(pid, signal.SIGKILL)


def wait_idle(folder: Path, limit: float = 30.0) -> None:
    """Until no process works in `folder` (a synchronisation point, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while running_in(folder):
        assert time.monotonic() < deadline, f"a command still runs in {folder}"
        time.sleep(0.02)


def folder_project(project: Project, n: int = 3) -> None:
    project.write("code/parts.py", PARTS)
    project.write("Workflowfile", FOLDER.replace("{n: 3}", f"{{n: {n}}}"))


def parts(project: Project) -> list[str]:
    return sorted(p.name for p in (project.root / "out").iterdir())


def recorded_files(project: Project, stage: str) -> list[str]:
    output = project.record(stage)["output"]
    return [f["path"] for f in output["files"]] if output else []


# ---------------------------------------------------------------- clearing declared outputs


def test_a_folder_output_holds_only_what_the_last_run_wrote(project: Project) -> None:
    folder_project(project, n=3)
    assert project.run().code == 0
    assert parts(project) == ["part-1", "part-2", "part-3"]

    folder_project(project, n=2)
    result = project.run("--json")
    assert result.code == 0, result.stderr
    assert parts(project) == ["part-1", "part-2"]  # part-3 of the n=3 run is gone
    assert recorded_files(project, "parts") == ["out/part-1", "out/part-2"]
    assert (project.root / "count.txt").read_text().split() == ["part-1", "part-2"]

    # The same result as a build from scratch of n=2.
    scratch = Project(project.root.parent / "scratch")
    folder_project(scratch, n=2)
    assert scratch.run().code == 0
    assert parts(scratch) == parts(project)
    assert scratch.record("parts")["output"]["digest"] == project.record("parts")["output"]["digest"]


def test_a_file_left_in_a_folder_output_by_hand_is_removed_before_the_command(
        project: Project) -> None:
    folder_project(project, n=2)
    (project.root / "out" / "nested").mkdir(parents=True)
    (project.root / "out" / "nested" / "stray.txt").write_text("not the command's")
    assert project.run().code == 0
    assert parts(project) == ["part-1", "part-2"]


@pytest.mark.parametrize("output", ["out.txt", "out"])
def test_a_command_that_writes_nothing_fails_instead_of_keeping_the_old_output(
        project: Project, output: str) -> None:
    write = "echo x > out.txt" if output == "out.txt" else "mkdir out && echo x > out/a"
    project.write("Workflowfile", NOTHING.replace("COMMAND", write).replace("OUTPUT", output))
    assert project.run().code == 0
    assert (project.root / output).exists()

    project.write("Workflowfile", NOTHING.replace("COMMAND", "echo writes nothing").replace("OUTPUT", output))
    result = project.run("--json")
    assert result.code == 1
    assert f"did not create its declared output {output}" in result.stage("parts")["error"]
    assert not (project.root / output).exists()
    record = project.record("parts")
    assert record["status"] == "failed" and record["output"] is None


def test_a_symlinked_output_is_removed_not_followed(project: Project, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    project.write("Workflowfile", NOTHING.replace("COMMAND", "mkdir out && echo x > out/a")
                  .replace("OUTPUT", "out"))
    (project.root / "out").symlink_to(elsewhere, target_is_directory=True)
    assert project.run().code == 0
    assert (elsewhere / "keep.txt").read_text() == "mine"
    assert not (project.root / "out").is_symlink()
    assert (project.root / "out" / "a").read_text() == "x\n"


def test_a_kill_after_the_outputs_are_cleared_leaves_a_record_that_reruns(
        project: Project, procs: list[subprocess.Popen[str]], leftovers: None) -> None:
    folder_project(project, n=3)
    assert project.run().code == 0
    old = project.record("parts")

    (project.root / "code" / "hold").write_text("x")
    build = project.start("--force", "parts")
    procs.append(build)
    project.wait_for("code/started", build)
    build.send_signal(signal.SIGKILL)
    build.wait()

    # The outputs are gone (the command waits before writing) and the record claims none.
    assert not (project.root / "out").exists()
    record = project.record("parts")
    assert record["status"] == "running"
    assert record["output"] is None and record["run_id"] != old["run_id"]
    status = project.run("status", "--json")
    parts_status = next(s for s in status.json()["stages"] if s["stage"] == "parts")
    assert not parts_status["up_to_date"]

    # The orphaned command (SIGKILL leaves it running, holding the lock) ends; the next build
    # runs the stage again although nothing about it changed.
    (project.root / "code" / "hold").unlink()
    wait_idle(project.root)
    result = project.run("--json")
    assert result.code == 0, result.stderr
    parts_result = result.stage("parts")
    assert parts_result["action"] == "run" and parts_result["result"] == "completed"
    assert [r["code"] for r in parts_result["reasons"]] == ["incomplete"]
    assert parts(project) == ["part-1", "part-2", "part-3"]
    assert project.record("parts")["output"]["digest"] == old["output"]["digest"]


# ---------------------------------------------------------------- SIGINT / SIGTERM


COMPOUND = """
workflow: demo
stages:
  slow:
    run: echo $$ > code/pgid; touch code/started; sleep 30; echo done > o.txt
    outputs: [o.txt]
"""


# SIGHUP: the terminal closed. The command, in a session of its own, no longer gets the hangup
# from the terminal: dd-build ends it as for SIGTERM.
@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130),
                                                (signal.SIGHUP, 129)])
def test_an_interrupt_ends_the_whole_command_and_releases_the_lock(
        project: Project, procs: list[subprocess.Popen[str]], leftovers: None,
        sig: int, exit_code: int) -> None:
    project.write("Workflowfile", COMPOUND)
    build = project.start()
    procs.append(build)
    project.wait_for("code/started", build)
    pgid = int((project.root / "code" / "pgid").read_text())
    assert group_alive(pgid) and running_in(project.root)

    build.send_signal(sig)
    _, err = build.communicate(timeout=60)
    assert build.returncode == exit_code, err
    # dd-build waited for the command's group before it exited: nothing of it runs on.
    assert not group_alive(pgid)
    assert running_in(project.root) == []
    assert not (project.root / "o.txt").exists()
    assert project.record("slow")["status"] == "interrupted"

    # The lock was released with it: the next build runs at once instead of exiting 4.
    (project.root / "code" / "started").unlink()
    project.write("Workflowfile", COMPOUND.replace("sleep 30", "true"))
    again = project.run("--json")
    assert again.code == 0, again.stderr
    assert again.stage("slow")["result"] == "completed"
    assert (project.root / "o.txt").read_text() == "done\n"


def test_under_nohup_a_hangup_is_ignored(project: Project,
                                         procs: list[subprocess.Popen[str]]) -> None:
    project.write("Workflowfile", COMPOUND.replace("sleep 30", "sleep 1"))
    build = subprocess.Popen(["nohup", sys.executable, "-m", "buildtool"], cwd=project.root,
                             env=project.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    procs.append(build)
    project.wait_for("code/started", build)
    build.send_signal(signal.SIGHUP)
    _, err = build.communicate(timeout=60)
    assert build.returncode == 0, err
    assert (project.root / "o.txt").read_text() == "done\n"


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(
        project: Project, procs: list[subprocess.Popen[str]], leftovers: None) -> None:
    # SIGTERM is ignored by the shell and, inherited, by its `sleep`: only SIGKILL ends them.
    project.write("Workflowfile", COMPOUND.replace("echo $$", "trap '' TERM; echo $$"))
    build = project.start()
    procs.append(build)
    project.wait_for("code/started", build)
    pgid = int((project.root / "code" / "pgid").read_text())

    build.send_signal(signal.SIGTERM)
    _, err = build.communicate(timeout=60)
    assert build.returncode == 143, err
    assert not group_alive(pgid)
    assert running_in(project.root) == []
    assert not (project.root / "o.txt").exists()
    unlocked = project.run("clean", "--all")  # takes the lock: exit 4 if the command still held it
    assert unlocked.code == 0, unlocked.stderr
