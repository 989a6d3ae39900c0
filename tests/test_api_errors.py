"""The Python API's exceptions: WorkflowError (the CLI's exit 2), ResumeRefused (3),
BuildLocked (4), all BuildError; each raised where the CLI exits with its code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project

import buildtool


def test_the_family() -> None:
    for cls, code in ((buildtool.WorkflowError, 2), (buildtool.ResumeRefused, 3),
                      (buildtool.BuildLocked, 4)):
        assert issubclass(cls, buildtool.BuildError) and cls.exit_code == code
    from buildtool.errors import StateError, UsageError

    assert issubclass(UsageError, buildtool.WorkflowError)
    assert issubclass(StateError, buildtool.WorkflowError)


def test_invalid_workflowfile_says_where(project: Project) -> None:
    project.write("Workflowfile", """
        workflow: demo
        stages:
          a:
            generate: code/stages.py:rows
            num_recrods: 3
        """)
    with pytest.raises(buildtool.WorkflowError) as caught:
        buildtool.build(project.root)
    err = caught.value
    assert err.file == str(project.root / "Workflowfile")
    assert (err.line, err.stage, err.key) == (6, "a", "num_recrods")
    assert "num_records" in (err.hint or "")
    assert f"{project.root / 'Workflowfile'}:6" in str(err)
    cli = project.run("--json").json()["error"]
    assert (cli["line"], cli["stage"], cli["key"]) == (err.line, err.stage, err.key)


def test_requests_that_name_what_is_not_there(project: Project, tmp_path: Path) -> None:
    with pytest.raises(buildtool.WorkflowError, match="no Workflowfile"):
        buildtool.build(tmp_path)
    with pytest.raises(buildtool.WorkflowError, match="no such file or folder"):
        buildtool.status(tmp_path / "missing")
    with pytest.raises(buildtool.WorkflowError) as caught:
        buildtool.build(project.root, ["cc"])
    assert "`c`" in (caught.value.hint or "")
    with pytest.raises(buildtool.WorkflowError, match="--force"):
        buildtool.build(project.root, force=["nope"])
    with pytest.raises(buildtool.WorkflowError) as caught:
        buildtool.build(project.root, resume="alwyas")  # type: ignore[arg-type]
    assert "always" in (caught.value.hint or "")
    with pytest.raises(TypeError):
        buildtool.build(project.root, [1])  # type: ignore[list-item]
    with pytest.raises(buildtool.WorkflowError, match="no output yet") as caught:
        buildtool.read_output(project.root, "a")
    assert caught.value.stage == "a"
    assert not (project.root / "artifacts").exists()  # nothing was written


def test_resume_always_refuses_before_anything_runs(project: Project) -> None:
    assert buildtool.build(project.root).ok
    project.write("Workflowfile", (project.root / "Workflowfile").read_text()
                  .replace("params: {tag: x}", "params: {tag: y}"))
    before = (project.artifacts / "a" / "stage.json").read_bytes()
    for dry_run in (False, True):
        with pytest.raises(buildtool.ResumeRefused) as caught:
            buildtool.build(project.root, resume="always", dry_run=dry_run)
        assert "a: " in caught.value.message and caught.value.exit_code == 3
    assert (project.artifacts / "a" / "stage.json").read_bytes() == before
    assert buildtool.build(project.root, resume="if-possible").stage("a").result == "completed"


HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.pwrite(fd, f"{os.getpid()}\\n".encode(), 0)
print("locked", flush=True)
sys.stdin.read()  # held until the test closes stdin
"""


def test_lock_held_by_another_process(project: Project) -> None:
    project.artifacts.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(project.artifacts / ".lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(buildtool.BuildLocked) as caught:
            buildtool.build(project.root)
        assert str(holder.pid) in caught.value.message and caught.value.exit_code == 4
        assert buildtool.build(project.root, dry_run=True).ok  # a dry run takes no lock
        assert not (project.artifacts / "a").exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    assert buildtool.build(project.root).ok  # this process holds no lock of its own after
