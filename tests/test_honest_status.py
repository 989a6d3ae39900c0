"""Honest status (issue 9): after a kill, `status` says what happened and what the next build
does; a fresh run never counts batches it drops as kept; a resume says the same words in the
build's output and in `--explain`.

Real builds (`python -m buildtool`) of the CHAIN workflow (a → b → c) are stopped with real
signals at a known batch (HANG_AT writes a marker file, then blocks).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Project

SUPPORT = Path(__file__).resolve().parent / "honest_support.py"


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started; any still alive at the end are killed (by their own pid)."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def start_until(project: Project, procs: list[subprocess.Popen[str]], at: str,
                *args: str, **env: str) -> subprocess.Popen[str]:
    """Start a build with HANG_AT=`at` and return once that batch has been reached."""
    stage, index = at.split(":")
    proc = project.start(*args, HANG_AT=at, **env)
    procs.append(proc)
    project.wait_for(f"code/{stage}-reached-{index}", proc)
    return proc


def kill_at(project: Project, procs: list[subprocess.Popen[str]], at: str, *args: str) -> int:
    """SIGKILL a build at batch `at`; returns the killed build's pid."""
    proc = start_until(project, procs, at, *args)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (project.root / "code" / at.replace(":", "-reached-")).unlink()
    project.clear_calls()
    return proc.pid


def status_line(project: Project, stage: str) -> str:
    """The stage's line in `dd-build status` (its state, then its last run in brackets)."""
    out = project.run("status")
    assert out.code == 0, out.stderr
    return next(line for line in out.stdout.splitlines() if line.startswith(f"{stage} "))


def status_doc(project: Project, stage: str) -> dict[str, Any]:
    out = project.run("status", "--json")
    assert out.code == 0, out.stderr
    return next(s for s in out.json()["stages"] if s["stage"] == stage)


def set_params(project: Project, tag: str) -> None:
    path = project.root / "Workflowfile"
    text = path.read_text()
    path.write_text(text.replace("    batch_size: 10\n",
                                 f"    batch_size: 10\n    params: {{tag: {tag}}}\n", 1))


# ---------------------------------------------------------------- 1. killed, interrupted, running


def test_status_after_sigkill_says_interrupted_killed_with_the_batches_kept(project, procs):
    kill_at(project, procs, "b:3")
    assert project.record("b")["status"] == "running"  # what the killed build left

    line = status_line(project, "b")
    assert "interrupted (killed): 3 of 6 batches kept; the next build resumes" in line
    assert "running" not in line
    doc = status_doc(project, "b")
    assert (doc["status"], doc["killed"], doc["batches_kept"], doc["batches_total"]) == \
        ("interrupted", True, 3, 6)
    assert doc["state"] in line and "pid" not in doc

    explained = project.run("-n", "--explain")
    assert "b  resume (3 of 6 batches kept)" in explained.stdout
    assert "the last run was killed with 3 of 6 batches done" in explained.stdout
    built = project.run("--json")
    assert built.code == 0, built.stderr
    assert "▶ b: resume (3 of 6 batches kept): " in built.stderr  # the same words
    assert built.stage("b")["batches_run"] == 3
    assert "interrupted" not in status_line(project, "b")


def test_status_of_a_build_running_in_another_process_says_running(project, procs):
    first = start_until(project, procs, "b:3")
    line = status_line(project, "b")
    assert f"running (dd-build pid {first.pid})" in line and "killed" not in line
    doc = status_doc(project, "b")
    assert (doc["status"], doc["killed"], doc["pid"]) == ("running", False, first.pid)
    explained = project.run("-n", "--explain")
    assert f"a dd-build (pid {first.pid}) is running it now" in explained.stdout
    assert "was killed" not in explained.stdout


def test_a_live_build_does_not_make_an_earlier_killed_record_look_running(project, procs):
    """b was left `running` by a killed build; a new build holds the lock, busy with a."""
    kill_at(project, procs, "b:3")
    second = start_until(project, procs, "a:0", "--force", "a")
    assert f"running (dd-build pid {second.pid})" in status_line(project, "a")
    assert "interrupted (killed)" in status_line(project, "b")
    assert status_doc(project, "b")["killed"] is True


def test_a_double_sigint_leaves_the_stage_interrupted(project, procs):
    proc = start_until(project, procs, "b:3")
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert project.record("b")["status"] == "interrupted"
    line = status_line(project, "b")
    assert "interrupted: 3 of 6 batches kept; the next build resumes" in line
    assert "killed" not in line and "running" not in line


def test_a_second_sigint_while_the_first_is_recorded_still_records_it(project, procs):
    """The second SIGINT lands while dd-build writes the `interrupted` record (the support
    script holds there): it waits until the record is written."""
    hold = project.root / "hold"
    proc = subprocess.Popen([sys.executable, str(SUPPORT)], cwd=project.root, text=True,
                            env=project.env(HANG_AT="b:3", HOLD_FILE=str(hold)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs.append(proc)
    project.wait_for("code/b-reached-3", proc)
    proc.send_signal(signal.SIGINT)
    project.wait_for("hold", proc)  # inside the recording of the first interrupt
    proc.send_signal(signal.SIGINT)
    (project.root / "hold.release").write_text("")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert project.record("b")["status"] == "interrupted"
    assert "interrupted: 3 of 6 batches kept" in status_line(project, "b")


KILLED_RUN = """
workflow: demo
stages:
  r:
    run: exec python3 -c "import os, time; open('cmd.pid', 'w').write(str(os.getpid())); time.sleep(120)"
    outputs: [out.txt]
"""


def test_a_killed_run_stage_is_explained_without_batches(project, procs):
    project.write("Workflowfile", KILLED_RUN)
    proc = project.start()
    procs.append(proc)
    project.wait_for("cmd.pid", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    command = int((project.root / "cmd.pid").read_text())
    try:  # the command it started still runs (and holds the lock): dd-build was killed
        line = status_line(project, "r")
        assert "interrupted (killed) while its command ran; the next build reruns it" in line
        assert "batch" not in line and "?" not in line
    finally:
        os.kill(command, signal.SIGKILL)
    explained = project.run("-n", "--explain").stdout
    assert "the last run was killed while its command ran" in explained
    assert "batch" not in explained and "?" not in explained
    assert status_doc(project, "r")["killed"] is True


# ---------------------------------------------------------------- 2. fresh runs drop batches


def test_a_fresh_run_says_its_finished_batches_are_discarded(project, procs):
    kill_at(project, procs, "b:3")
    set_params(project, "y")
    explained = project.run("-n", "--explain")
    assert "b  run\n" in explained.stdout
    assert "the last run was killed: 3 finished batches discarded because params.tag " \
           "changed" in explained.stdout
    assert "batches done" not in explained.stdout and "kept" not in explained.stdout
    line = status_line(project, "b")
    assert "interrupted (killed): the next build runs it fresh" in line
    assert "kept" not in line
    reason = next(r for r in status_doc(project, "b")["reasons"] if r["code"] == "incomplete")
    assert reason["batches_discarded"] == 3

    forced = project.run("-n", "--explain", "--resume", "never").stdout
    assert "3 finished batches discarded because --resume never" in forced

    built = project.run("--json")
    assert built.code == 0 and built.stage("b")["batches_run"] == 6


def test_a_failed_stage_that_runs_fresh_does_not_count_its_batches_as_kept(project):
    assert project.run(FAIL_AT="b:3").code == 1
    assert "3 batches kept" in project.run("-n", "--explain").stdout  # it would resume
    set_params(project, "y")
    explained = project.run("-n", "--explain").stdout
    assert "3 finished batches discarded because params.tag changed" in explained
    assert "kept" not in explained


def test_a_single_kept_batch_is_one_batch(project, procs):
    kill_at(project, procs, "b:1")
    assert "1 of 6 batches kept" in status_line(project, "b")
    set_params(project, "y")
    assert "1 finished batch discarded" in project.run("-n", "--explain").stdout


# ---------------------------------------------------------------- the lock and its readers


def test_a_reader_checking_the_lock_never_makes_a_build_fail_to_take_it(tmp_path, monkeypatch):
    """`status` takes the lock shared for a moment; a build that meets it waits it out."""
    import fcntl

    from buildtool import lock

    with lock.build_lock(tmp_path):
        pass  # the lock file exists now
    reader = os.open(tmp_path / lock.LOCK_NAME, os.O_RDONLY)
    fcntl.flock(reader, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a reader, caught in its moment
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the reader lets go while the build waits
        waits.append(seconds)
        fcntl.flock(reader, fcntl.LOCK_UN)

    monkeypatch.setattr(lock.time, "sleep", sleep)
    try:
        with lock.build_lock(tmp_path):
            holder = lock.live_holder(tmp_path)
            assert holder is not None and holder.pid == os.getpid()
    finally:
        os.close(reader)
    assert waits  # it did meet the reader
    assert lock.live_holder(tmp_path) is None


def test_a_build_holding_the_lock_is_still_refused(tmp_path):
    from buildtool import lock
    from buildtool.errors import BuildLocked

    with lock.build_lock(tmp_path):
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; "
             "from buildtool.lock import build_lock\n"
             "try:\n    build_lock(Path(sys.argv[1])).__enter__()\n"
             "except Exception as exc:\n    print(type(exc).__name__, exc.message)",
             str(tmp_path)], capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        assert other.stdout.startswith(f"{BuildLocked.__name__} another dd-build (pid {os.getpid()})")


def test_status_of_a_project_never_built_makes_no_lock_file(project):
    assert project.run("status").code == 0
    assert not (project.root / "artifacts").exists()


def test_signals_held_defers_an_interrupt_to_the_end_of_the_block():
    import threading

    from buildtool.execute import signals_held

    reached = []
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            os.kill(os.getpid(), signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # a second one, while held
            reached.append("end of block")  # not interrupted before this line
    assert reached == ["end of block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    failures: list[BaseException] = []

    def in_a_thread() -> None:  # signal handlers can be set in the main thread only
        try:
            with signals_held():
                pass
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert failures == []
