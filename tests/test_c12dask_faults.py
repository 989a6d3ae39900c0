"""Faults on a Dask cluster: a worker SIGKILLed mid-batch (the batch runs elsewhere), the
client SIGKILLed mid-stage (the next build resumes; the orphaned futures are harmless), the
scheduler gone (a clear failure, nothing lost, a local build resumes), SIGINT (the futures
cancelled, what finished recorded), an input path a worker cannot see (said as such)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from c10b_support import built_state, jobs_project
from c12dask_support import (
    ADDRESS,
    needs_cluster,
    needs_dask,
    start_scheduler,
    start_worker,
    stop,
    wait_for_workers,
)
from conftest import Project

# `hold`: batch 1 waits for marks/go (JOBS_CODE in c10b_support.py); `victim`: a batch that
# lands on the worker with that pid marks itself and waits there until it is killed.
HELD = """
workflow: demo
stages:
  held:
    generate: code/jobs.py:rows
    num_records: 24
    batch_size: 3
    concurrency: 3
    params: {hold: true}
"""
VICTIM_CODE = """
import os, time
from pathlib import Path

MARKS = Path(__file__).resolve().parent.parent / "marks"


def _on_a_worker():
    try:
        from distributed import get_worker
        get_worker()
        return True
    except (ImportError, ValueError):
        return False


def make(ctx):
    if os.getpid() == ctx.params["victim"]:
        MARKS.mkdir(exist_ok=True)
        (MARKS / f"victim-{ctx.batch_index}").write_text("x")
        while True:  # until the test kills this worker
            time.sleep(0.05)
    # the other workers hold their batches until the victim has one (at most 60 s)
    deadline = time.monotonic() + 60
    while _on_a_worker() and not list(MARKS.glob("victim-*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [{"i": ctx.offset + k, "r": ctx.rng.random()} for k in range(ctx.size)]
"""
VICTIM = """
workflow: demo
stages:
  spread:
    generate: code/victim.py:make
    num_records: 40
    batch_size: 2
    concurrency: 16
    params: {{victim: {pid}}}
"""


def _marked(root: Path, prefix: str) -> bool:
    folder = root / "marks"
    return folder.is_dir() and any(folder.glob(f"{prefix}*"))


def _wait_marked(root: Path, prefix: str, proc: object = None, limit: float = 120) -> None:
    """Until a file marks/<prefix>* exists (a synchronisation point, not a timing check)."""
    deadline = time.monotonic() + limit
    while not _marked(root, prefix):
        if proc is not None and proc.poll() is not None:  # type: ignore[attr-defined]
            raise AssertionError(f"the build ended first: {proc.communicate()}")  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise AssertionError(f"marks/{prefix}* never appeared")
        time.sleep(0.02)


@needs_cluster
def test_a_worker_killed_mid_batch_the_batch_runs_elsewhere(tmp_path: Path) -> None:
    assert ADDRESS is not None
    worker = start_worker(ADDRESS, tmp_path / "victim-worker")
    try:
        wait_for_workers(ADDRESS, 3)
        text = VICTIM.format(pid=worker.pid)
        local, on_dask = Project(tmp_path / "local"), Project(tmp_path / "dask")
        for proj in (local, on_dask):
            proj.write("code/victim.py", VICTIM_CODE)
            proj.write("Workflowfile", text)
        build = on_dask.start("--scheduler", ADDRESS)
        _wait_marked(on_dask.root, "victim-", build)
        os.kill(worker.pid, signal.SIGKILL)  # mid-batch, by its pid
        out, err = build.communicate(timeout=300)
        assert build.returncode == 0, err
        assert on_dask.record("spread")["status"] == "completed"
    finally:
        stop(worker)
    assert local.run().code == 0
    assert built_state(local.root, "demo") == built_state(on_dask.root, "demo")


@needs_cluster
def test_a_client_killed_mid_stage_the_next_build_resumes(tmp_path: Path) -> None:
    assert ADDRESS is not None
    serial = jobs_project(tmp_path / "serial", HELD)
    (serial.root / "marks").mkdir()
    (serial.root / "marks" / "go").write_text("x")
    assert serial.run().code == 0
    proj = jobs_project(tmp_path / "dask", HELD)
    build = proj.start("--scheduler", ADDRESS)
    try:
        proj.wait_for("marks/held-reached", build)
        # the batches beside the held one come back and are journaled; then the kill
        _wait_journaled(proj, 2, build)
    finally:
        build.kill()
        build.communicate()
    assert proj.record("held")["status"] == "running"  # as a SIGKILL leaves it
    (proj.root / "marks" / "go").write_text("x")  # the orphaned batch may finish: harmless
    result = proj.run("--scheduler", ADDRESS)
    assert result.code == 0, result.stderr
    assert "resume (" in result.stderr and "batches kept" in result.stderr
    assert built_state(serial.root, "demo") == built_state(proj.root, "demo")


def _journal(proj: Project) -> set[str]:
    """The batches the journal lists (a batch has a second line once synced: counted once)."""
    record = proj.record("held")
    journal = proj.artifacts / "held" / (record.get("journal") or "none")
    lines = journal.read_text().splitlines() if journal.is_file() else []
    return {line.split(",")[0] for line in lines if line.startswith('{"index"')}


def _wait_journaled(proj: Project, count: int, proc: object, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while len(_journal(proj)) < count:
        if proc.poll() is not None:  # type: ignore[attr-defined]
            raise AssertionError("the build ended first")
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {count} batches were journaled")
        time.sleep(0.02)


@needs_dask
def test_the_scheduler_gone_fails_the_stage_clearly_and_a_local_build_resumes(
        tmp_path: Path) -> None:
    scheduler, address = start_scheduler(tmp_path / "scheduler")
    worker = start_worker(address, tmp_path / "worker")
    try:
        wait_for_workers(address, 1)
        proj = jobs_project(tmp_path / "dask", HELD)
        build = proj.start("--scheduler", address, DD_BUILD_DASK_LOST_AFTER_S="2")
        proj.wait_for("marks/held-reached", build)
        _wait_journaled(proj, 2, build)
        stop(scheduler)
        out, err = build.communicate(timeout=120)
    finally:
        (tmp_path / "dask" / "marks").mkdir(exist_ok=True)
        (tmp_path / "dask" / "marks" / "go").write_text("x")
        stop(scheduler, worker)
    assert build.returncode == 1, err
    assert "Traceback" not in err, err
    assert "lost the Dask scheduler" in err or "scheduler was lost" in err, err
    record = proj.record("held")
    assert record["status"] == "failed" and len(record["batches"]) >= 2
    kept = len(record["batches"])
    again = proj.run("--executor", "local")
    assert again.code == 0, again.stderr
    assert f"{kept} of 8 batches kept" in again.stderr
    serial = jobs_project(tmp_path / "serial", HELD)
    (serial.root / "marks").mkdir()
    (serial.root / "marks" / "go").write_text("x")
    assert serial.run().code == 0
    assert built_state(serial.root, "demo") == built_state(proj.root, "demo")


@needs_cluster
def test_sigint_cancels_the_futures_and_records_what_finished(tmp_path: Path) -> None:
    assert ADDRESS is not None
    proj = jobs_project(tmp_path / "dask", HELD)
    build = proj.start("--scheduler", ADDRESS)
    try:
        proj.wait_for("marks/held-reached", build)
        _wait_journaled(proj, 2, build)
        build.send_signal(signal.SIGINT)
        out, err = build.communicate(timeout=60)
    finally:
        (proj.root / "marks" / "go").write_text("x")
        if build.poll() is None:
            build.kill()
            build.communicate()
    assert build.returncode == 130, err
    record = proj.record("held")
    assert record["status"] == "interrupted"
    assert f"interrupted in 'held' ({len(record['batches'])} of 8 batches kept)" in err
    assert 1 not in [b["index"] for b in record["batches"]]  # the held batch was dropped


@needs_dask
def test_an_input_a_worker_cannot_see_is_said_as_such(tmp_path: Path) -> None:
    """What a worker sends back when the user's code fails to open an input path that is
    not on that worker (the CI workers share this machine's files, so this runs the
    worker's side in-process)."""
    from buildtool.batchexec import StageCall
    from buildtool.daskwork import _remote_error
    from buildtool.errors import UserCodeFailed

    missing = str(tmp_path / "not-here" / "notes.txt")
    call = StageCall("shaped", "code/x.py:f", str(tmp_path), {}, {"data/notes.txt": missing},
                     0, 0, 0.0)
    try:
        try:
            open(missing)
        except OSError as cause:
            raise UserCodeFailed("code/x.py:f raised FileNotFoundError", stage="shaped") \
                from cause
    except UserCodeFailed as exc:
        error = _remote_error(exc, call)
    assert f"cannot see the input {missing}" in error.message
    assert "same path on every worker" in error.message and error.hint
    # a path that is there (the code failed for another reason) is not blamed
    present = tmp_path / "notes.txt"
    present.write_text("x")
    call = StageCall("shaped", "code/x.py:f", str(tmp_path), {}, {"n": str(present)}, 0, 0, 0.0)
    try:
        try:
            raise PermissionError(13, "denied", str(present))
        except OSError as cause:
            raise UserCodeFailed("raised", stage="shaped") from cause
    except UserCodeFailed as exc:
        assert "cannot see" not in _remote_error(exc, call).message


@needs_dask
def test_a_batch_orphaned_by_a_killed_client_does_not_hold_up_the_next_builds_code(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker runs one version of the project's code at a time (kinds/bundleload.py); a
    batch whose client was killed runs on in its thread, but no longer counts: the next build,
    with edited code, runs beside it on the same worker."""
    monkeypatch.setenv("WAIT_S", "600")  # on the worker: the held batch waits that long
    scheduler, address = start_scheduler(tmp_path / "scheduler")
    worker = start_worker(address, tmp_path / "worker", threads=2)
    proj = jobs_project(tmp_path / "dask", HELD)
    try:
        wait_for_workers(address, 1)
        build = proj.start("--scheduler", address)
        try:
            proj.wait_for("marks/held-reached", build)
        finally:
            build.kill()
            build.communicate()
        code = proj.root / "code" / "jobs.py"
        code.write_text(code.read_text() + "\n# edited: the workers get other code\n")
        proj.write("Workflowfile", HELD.replace("{hold: true}", "{hold: false}"))
        again = proj.start("--scheduler", address)
        out, err = again.communicate(timeout=240)  # the orphan waits 600 s: not for it
        assert again.returncode == 0, err
        assert proj.record("held")["status"] == "completed"
        assert not (proj.root / "marks" / "go").exists()  # the orphan was never let go
    finally:
        (proj.root / "marks").mkdir(exist_ok=True)
        (proj.root / "marks" / "go").write_text("x")
        stop(worker, scheduler)


@needs_dask
def test_every_worker_gone_is_said_and_a_new_worker_finishes_the_stage(tmp_path: Path) -> None:
    """Dask waits for workers rather than fail: the build says why nothing moves (it printed
    nothing, found by a trial); a worker that comes back finishes the stage."""
    import subprocess
    import threading

    scheduler, address = start_scheduler(tmp_path / "scheduler")
    worker = start_worker(address, tmp_path / "worker", threads=2)
    later = None
    proj = jobs_project(tmp_path / "dask", HELD)
    try:
        wait_for_workers(address, 1)
        build = proj.start("--scheduler", address, DD_BUILD_DASK_LOST_AFTER_S="1")
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(build.stderr.readline, "")))
        reader.start()
        proj.wait_for("marks/held-reached", build)
        stop(worker)
        deadline = time.monotonic() + 120
        while not any("has no workers" in line for line in lines):  # a synchronisation point
            assert build.poll() is None and time.monotonic() < deadline, lines
            time.sleep(0.05)
        (proj.root / "marks" / "go").write_text("x")
        later = start_worker(address, tmp_path / "worker-2", threads=2)
        build.wait(timeout=240)
        reader.join(10)
        assert build.returncode == 0, "".join(lines)
        assert proj.record("held")["status"] == "completed"
    except subprocess.TimeoutExpired:
        build.kill()
        raise
    finally:
        (proj.root / "marks").mkdir(exist_ok=True)
        (proj.root / "marks" / "go").write_text("x")
        stop(*[p for p in (worker, later) if p is not None], scheduler)
