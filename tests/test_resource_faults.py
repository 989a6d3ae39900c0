"""Resource faults during a batch write (issue 4, item 6): a full disk or a read-only artifacts
folder fails the stage with a clear message, the batches written before stay listed, and the
next build, once the fault is gone, resumes without regenerating them.

The faults are real OS errors, not mocks:
- file too large: the CLI runs with RLIMIT_FSIZE lowered (and SIGXFSZ ignored, so write()
  returns EFBIG instead of killing the process); small batches fit, batch BIG does not;
- no space left: the artifacts folder is a small tmpfs (needs mount permission: skipped
  otherwise), later remounted larger;
- read-only: the build pauses inside batch BIG, the artifacts folder is bind-mounted read-only
  over itself (as root, chmod would not stop writes), then the batch returns (skipped when
  mounting is not permitted).
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, Result

from buildtool.records import read_record

BATCHES = 6
BIG = 3  # the batch that is large enough to hit the fault
LIMIT = 256 * 1024  # bytes: every small batch, record and journal fits; batch BIG does not

# Batch BIG holds ~1.2 MB of incompressible text; the others a few hundred bytes. PAUSE_AT=<i>
# makes batch i write code/reached and wait for code/go (so a test can change the disk under
# a running build). Each call is logged, so a test sees which batches ran.
CODE = '''
import os, time
from pathlib import Path

HERE = Path(__file__).parent
BIG = int(os.environ.get("BIG_AT", "-1"))

def rows(ctx):
    with open(HERE / "calls.log", "a") as fh:
        fh.write(f"{ctx.stage_name} {ctx.batch_index}\\n")
    if os.environ.get("PAUSE_AT") == str(ctx.batch_index):
        (HERE / "reached").write_text("x")
        while not (HERE / "go").exists():
            time.sleep(0.02)
    width = 300_000 if ctx.batch_index == BIG else 8
    return [{"id": ctx.offset + i, "blob": ctx.rng.randbytes(width).hex()}
            for i in range(ctx.size)]
'''

WORKFLOW = f"""
workflow: demo
stages:
  s:
    generate: code/stages.py:rows
    num_records: {2 * BATCHES}
    batch_size: 2
"""


@pytest.fixture
def project(tmp_path: Path) -> Project:
    proj = Project(tmp_path / "proj")
    proj.write("code/stages.py", CODE)
    proj.write("Workflowfile", WORKFLOW)
    return proj


def _cli(project: Project, *args: str, preexec: Callable[[], None] | None = None,
         **env: str) -> Result:
    proc = subprocess.run([sys.executable, "-m", "buildtool", "--json", *args], cwd=project.root,
                          env=project.env(BIG_AT=str(BIG), **env), capture_output=True, text=True,
                          timeout=120, preexec_fn=preexec)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _limit_file_size() -> None:
    """In the child: files may not grow past LIMIT; a write past it returns EFBIG."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def _batch_files(project: Project) -> dict[str, tuple[int, int, bytes]]:
    """Each batch file: (inode, mtime_ns, bytes) — a regenerated batch changes inode and mtime."""
    folder = project.artifacts / "s" / "batches"
    out = {}
    for path in sorted(folder.iterdir()):
        st = path.stat()
        out[path.name] = (st.st_ino, st.st_mtime_ns, path.read_bytes())
    return out


def _assert_failed_at_big(result: Result, os_error: str) -> dict[str, Any]:
    text = f"exit {result.code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.code == 1, text
    assert "Traceback" not in result.stderr, text
    stage = result.stage("s")
    assert stage["result"] == "failed", stage
    assert "stage 's'" in stage["error"] and "✗ s: failed" in result.stderr, text
    for where in (stage["error"], result.stderr):
        assert "cannot write its output" in where, text
        assert os_error in where, text
        assert f"batch-{BIG:06d}.parquet" in where, text
    assert stage["batches_run"] == BIG, stage
    return stage


def _assert_resumes(project: Project, kept: dict[str, tuple[int, int, bytes]],
                    reason: str) -> None:
    """The next build keeps batches 0..BIG-1 as they are and runs only the rest."""
    project.clear_calls()
    result = _cli(project)
    assert result.code == 0, result.stderr
    stage = result.stage("s")
    assert stage["action"] == "resume", stage
    assert reason in [r["code"] for r in stage["reasons"]], stage["reasons"]
    assert stage["batches_run"] == BATCHES - BIG, stage
    assert project.calls() == [f"s {i}" for i in range(BIG, BATCHES)]
    now = _batch_files(project)
    for name, before in kept.items():
        assert now[name] == before, f"{name} was rewritten"
    assert sorted(now) == [f"batch-{i:06d}.parquet" for i in range(BATCHES)]
    record = project.record("s")
    assert record["status"] == "completed" and len(record["batches"]) == BATCHES


def _assert_no_temp_files(project: Project) -> None:
    left = [p.name for p in project.artifacts.rglob("*") if ".tmp." in p.name]
    assert not left, left


def _listed(project: Project) -> list[int]:
    """The batches the stage's record lists (its journal merged, as the planner reads it)."""
    read = read_record(project.artifacts / "s")
    assert read.record is not None, read.problem
    return [b.index for b in read.record.batches]


# ---------------------------------------------------------------- file too large (RLIMIT_FSIZE)


def test_file_too_large_fails_the_stage_and_the_next_build_resumes(project: Project) -> None:
    result = _cli(project, preexec=_limit_file_size)
    _assert_failed_at_big(result, "File too large")

    record = project.record("s")
    assert record["status"] == "failed" and "File too large" in record["error"]
    assert [b["index"] for b in record["batches"]] == list(range(BIG))
    _assert_no_temp_files(project)
    kept = _batch_files(project)
    assert sorted(kept) == [f"batch-{i:06d}.parquet" for i in range(BIG)]

    _assert_resumes(project, kept, "failed_before")


# ---------------------------------------------------------------- mounts (root with CAP_SYS_ADMIN)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    """Mount points a test made; unmounted at the end, innermost first."""
    made: list[Path] = []
    yield made
    for point in reversed(made):
        subprocess.run(["umount", str(point)], capture_output=True)


def _mount_or_skip(mounts: list[Path], point: Path, *args: str) -> None:
    point.mkdir(parents=True, exist_ok=True)
    try:
        _mount(*args, str(point))
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        pytest.skip(f"cannot mount here ({str(detail).strip()}): needs root with CAP_SYS_ADMIN")
    mounts.append(point)


def test_full_disk_fails_the_stage_and_the_next_build_resumes(project: Project,
                                                              mounts: list[Path]) -> None:
    art = project.root / "artifacts"
    _mount_or_skip(mounts, art, "-t", "tmpfs", "-o", "size=512k,mode=0755", "tmpfs")

    result = _cli(project)
    _assert_failed_at_big(result, "No space left on device")
    record = project.record("s")
    assert record["status"] == "failed"
    assert [b["index"] for b in record["batches"]] == list(range(BIG))
    _assert_no_temp_files(project)
    kept = _batch_files(project)

    _mount("-o", "remount,size=16m", str(art))  # space is back; the files stay
    _assert_resumes(project, kept, "failed_before")


def test_read_only_artifacts_fail_the_stage_and_the_next_build_resumes(
        project: Project, mounts: list[Path]) -> None:
    art = project.root / "artifacts"
    build = subprocess.Popen([sys.executable, "-m", "buildtool", "--json"], cwd=project.root,
                             env=project.env(BIG_AT=str(BIG), PAUSE_AT=str(BIG)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        project.wait_for("code/reached", build)
        try:
            _mount_or_skip(mounts, art, "--bind", str(art))
            _mount("-o", "remount,ro,bind", str(art))
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot remount read-only here ({exc.stderr.strip()})")
        (project.root / "code" / "go").write_text("x")
        stdout, stderr = build.communicate(timeout=120)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    result = Result(build.returncode, stdout, stderr)
    stage = _assert_failed_at_big(result, "Read-only file system")
    # The failed record could not be written either; that is said, not hidden.
    assert "its failed record could not be written either" in stage["error"]
    assert "cannot write workflow.json" in result.stderr

    subprocess.run(["umount", str(art)], check=True)
    mounts.remove(art)
    # The record on disk is still the `running` one; its journal lists the finished batches.
    assert json.loads((project.artifacts / "s" / "stage.json").read_text())["status"] == "running"
    assert _listed(project) == list(range(BIG))
    _assert_no_temp_files(project)
    kept = _batch_files(project)
    assert sorted(kept) == [f"batch-{i:06d}.parquet" for i in range(BIG)]
    (project.root / "code" / "go").unlink()

    _assert_resumes(project, kept, "incomplete")

