"""SIGKILL a worker process of an `executor: process` stage (not the build) at random moments:
the build fails that stage cleanly, saying a worker process ended (exit 1; never an internal
error, exit 70: a BrokenProcessPool raised from submit once escaped), or finishes (exit 0); it
leaves every record consistent, no temp file and no worker behind; the next (serial) build
resumes, making again only what was in flight, and its output equals an uninterrupted build's;
then a null build runs nothing. The crash fuzzer of tests/crash_support.py with
`worker_kill_share` (Fuzzer.worker_kill_once): the moment is drawn as "after K calls of a
generate stage in this build", K from 0 (a worker killed as it starts) to the stage's batches.

DD_GEN_WORKER_KILLS=N makes N worker kills instead of 2 (benchmarks/fuzz_crash.py
--worker-kill-share runs them among the build kills).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import crash_support as cs
import pytest

KILLS = int(os.environ.get("DD_GEN_WORKER_KILLS", "2"))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> cs.Fuzzer:
    fuzzer = cs.Fuzzer(tmp_path_factory.mktemp("reference"), cs.Config())
    fuzzer.prepare()
    return fuzzer


def test_killing_a_worker_fails_the_stage_cleanly_and_the_next_build_resumes(
        calibrated: cs.Fuzzer, tmp_path: Path) -> None:
    lines: list[str] = []
    fuzzer = cs.Fuzzer(tmp_path / "fuzz", cs.Config(
        kills=KILLS, seed=1130, worker_kill_share=1.0, force_share=0.0, max_kills_per_round=2),
        lines.append)
    fuzzer.adopt(calibrated)
    fig = fuzzer.fuzz()
    assert fig.problems == [], "\n".join(fig.problems + lines)
    assert fig.violations == 0, "\n".join(fig.lines())
    assert fig.worker_kills == KILLS
    assert fig.worker_kill_failed_stage >= 1, "\n".join(lines)  # the path it is about


def test_the_workers_of_a_build_are_found_by_their_parent(tmp_path: Path) -> None:
    # The check can find what it kills: a spawned child of this process is listed, and only
    # a spawned one.
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    event = ctx.Event()
    child = ctx.Process(target=event.wait, args=(60,))
    child.start()
    try:
        # spawn forks, then execs spawn_main: until the exec the child looks like its parent
        deadline = time.monotonic() + 60  # a bound against a hang, not a timing
        while child.pid not in cs.spawned_children(os.getpid()) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child.pid in cs.spawned_children(os.getpid())
        assert cs.spawned_children(child.pid or 0) == []
    finally:
        event.set()
        child.join(60)


SLOW = '''
import os, time
from pathlib import Path

def slow(ctx):
    """Says its worker's pid, then waits (a bound only: the test kills the worker)."""
    (Path(__file__).parent / "worker.pid").write_text(str(os.getpid()))
    time.sleep(60)
    return [{"i": 0}]
'''


def test_a_batch_submitted_after_a_worker_died_fails_as_lost_not_raised(tmp_path: Path) -> None:
    # The path the worker kills above reach only now and then (1 kill in 8 here): a batch came
    # back after a worker died, the stage thread submits the next one to the broken pool, and
    # submit raises BrokenProcessPool. It must come back as the batch's failure (it escaped as
    # an internal error, exit 70, once).
    import signal

    from buildtool.batchexec import BatchTask, ProcessBatches, StageCall
    from buildtool.errors import StageFailed

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "s.py").write_text(SLOW)
    call = StageCall("a", "code/s.py:slow", str(tmp_path), {}, {}, 2, 0, 0.0)
    pool = ProcessBatches(call, 1, str(tmp_path / "log.txt"))
    try:
        pool.submit(BatchTask(0, 0, 1, None, 0))
        pid_file = tmp_path / "code" / "worker.pid"
        deadline = time.monotonic() + 60  # a bound against a hang, not a timing
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        first = None
        while first is None and time.monotonic() < deadline:
            first = pool.next_finished(0.1)
        assert first is not None and isinstance(first.error, StageFailed)
        pool.submit(BatchTask(1, 1, 1, None, 1))  # to the broken pool: must not raise
        second = pool.next_finished(10)
        assert second is not None and second.index == 1
        assert isinstance(second.error, StageFailed) and "worker process" in second.error.message
    finally:
        pool.shutdown(interrupt=True)
