"""In-stage concurrency (issue 10): outputs identical whatever `concurrency` and `executor`;
batches recorded as they finish; a failing batch with others in flight; retries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from c10a_support import FANOUT, REPO, Proj, one_stage, outputs, with_defaults

VARIANTS = [(8, "thread"), (3, "thread"), (8, "process")]


def example_project(root: Path, concurrency: int, executor: str) -> Proj:
    root.mkdir(parents=True)
    shutil.copytree(REPO / "examples", root / "examples")
    text = (REPO / "Workflowfile.example").read_text()
    proj = Proj(root, with_defaults(text, concurrency, executor) if concurrency > 1 else text)
    return proj


@pytest.fixture(scope="module")
def serial_example(tmp_path_factory: pytest.TempPathFactory) -> dict:
    proj = example_project(tmp_path_factory.mktemp("serial") / "p", 1, "thread")
    done = proj.run("-q")
    assert done.returncode == 0, done.stderr
    return outputs(proj) | {"report": (proj.root / "reports" / "summary.md").read_bytes()}


@pytest.mark.parametrize(("concurrency", "executor"), VARIANTS)
def test_the_example_is_identical_at_any_concurrency(serial_example, tmp_path, concurrency,
                                                     executor):
    proj = example_project(tmp_path / "p", concurrency, executor)
    done = proj.run("-q")
    assert done.returncode == 0, done.stderr
    got = outputs(proj) | {"report": (proj.root / "reports" / "summary.md").read_bytes()}
    assert got.keys() == serial_example.keys()
    for key in got:
        assert got[key] == serial_example[key], key


@pytest.fixture(scope="module")
def serial_fanout(tmp_path_factory: pytest.TempPathFactory) -> dict:
    proj = Proj(tmp_path_factory.mktemp("fanout") / "p", FANOUT)
    done = proj.run("-q")
    assert done.returncode == 0, done.stderr
    return outputs(proj)


@pytest.mark.parametrize(("concurrency", "executor"), VARIANTS)
def test_a_fan_out_is_identical_at_any_concurrency_with_flaky_batches(
        serial_fanout, tmp_path, concurrency, executor):
    proj = Proj(tmp_path / "p", with_defaults(FANOUT, concurrency, executor))
    # a flaky batch of the stage with retries: its retry starts from the seeded rng again
    done = proj.run("-q", FLAKY="right:1,right:6")
    assert done.returncode == 0, done.stderr
    assert outputs(proj) == serial_fanout
    assert sorted(proj.calls()).count(("right", 1)) == 2
    # each stage's code ran concurrently: thread or process, as asked
    pids = {pid for pid in proj.pids("?")}
    assert (len(pids) > 1) == (executor == "process")


def test_concurrency_and_executor_are_not_part_of_the_fingerprint(tmp_path):
    proj = Proj(tmp_path / "p", FANOUT)
    assert proj.run("-q").returncode == 0
    (proj.root / "Workflowfile").write_text(with_defaults(FANOUT, 8, "process"))
    done = proj.run("--json")
    assert done.returncode == 0, done.stderr
    assert {s["result"] for s in json.loads(done.stdout)["stages"]} == {"up_to_date"}


def test_a_compiled_workflow_carries_both_keys(tmp_path):
    # the second build reads the compiled workflow (a hit): its stage runs in workers all the same
    proj = Proj(tmp_path / "p", one_stage(6, "concurrency: 3\nexecutor: process"))
    assert proj.run("-q", BUILD="first").returncode == 0
    done = proj.run("-q", "--force", "a", BUILD="second")
    assert done.returncode == 0, done.stderr
    assert len(proj.pids("first")) > 1 and len(proj.pids("second")) > 1


def test_the_record_lists_batches_as_they_finish(tmp_path):
    # batch 0 holds until every other batch is journaled: they finished (and were listed)
    # first. A SIGKILL then loses only batch 0, and the serial rebuild makes only batch 0.
    import signal

    proj = Proj(tmp_path / "p", one_stage(10, "concurrency: 4"))
    build = proj.start("-q", HANG_AT="a:0", HANG_AFTER="9", BUILD="killed")
    wait_for(proj.root / "reached-a-0", build)
    build.send_signal(signal.SIGKILL)
    build.wait(timeout=60)
    (proj.root / "Workflowfile").write_text(one_stage(10))
    done = proj.run("-q", BUILD="serial")
    assert done.returncode == 0, done.stderr
    assert proj.calls("serial") == [("a", 0)]
    reference = Proj(tmp_path / "ref", one_stage(10))
    assert reference.run("-q").returncode == 0
    assert outputs(proj) == outputs(reference)


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_failing_batch_lets_the_batches_in_flight_finish_and_keeps_them(tmp_path, executor):
    proj = Proj(tmp_path / "p", one_stage(20, f"concurrency: 4\nexecutor: {executor}"))
    done = proj.run(FAIL_AT="a:5", BUILD="failing")
    assert done.returncode == 1
    assert "batch 5 raised RuntimeError: boom at a:5" in done.stderr
    assert "stages/gen.py:" in done.stderr  # where the user's code raised, also from a worker
    rec = proj.record("a")
    assert rec["status"] == "failed"
    listed = {b["index"] for b in rec["batches"]}
    called = {i for _, i in proj.calls("failing")}
    assert listed == called - {5}  # every batch called (in flight at the failure) is kept
    assert len(called) < 20  # no new batch was started after the failure
    log = (proj.artifacts / "a" / "log.txt").read_text()
    assert "RuntimeError: boom at a:5" in log  # the traceback
    assert "printed by batch 0" in log  # the code's output, from threads or workers
    done = proj.run("-q", BUILD="again")
    assert done.returncode == 0, done.stderr
    assert sorted(i for _, i in proj.calls("again")) == sorted(set(range(20)) - listed)
    reference = Proj(tmp_path / "ref", one_stage(20))
    assert reference.run("-q").returncode == 0
    assert outputs(proj)["a"][1:4] == outputs(reference)["a"][1:4]


def test_retries_under_concurrency_are_noted_and_counted(tmp_path):
    proj = Proj(tmp_path / "p", one_stage(8, "concurrency: 4\nretries: 1"))
    done = proj.run(FLAKY="a:2,a:5")
    assert done.returncode == 0, done.stderr
    assert "batch 2, attempt 1 of 2 failed: ValueError: flaky at a:2" in done.stderr
    assert "batch 5, attempt 1 of 2 failed" in done.stderr
    reference = Proj(tmp_path / "ref", one_stage(8))
    assert reference.run("-q").returncode == 0
    assert outputs(proj) == outputs(reference)


def test_process_retry_notes_come_back_with_the_batch(tmp_path):
    proj = Proj(tmp_path / "p", one_stage(4, "concurrency: 2\nexecutor: process\nretries: 1"))
    done = proj.run(FLAKY="a:3")
    assert done.returncode == 0, done.stderr
    assert "batch 3, attempt 1 of 2 failed: ValueError: flaky at a:3 (at stages/gen.py:" \
        in done.stderr


def wait_for(path: Path, proc, limit: float = 120.0) -> None:
    """Block until `path` exists (a synchronisation point, not a timing assertion)."""
    import time

    deadline = time.monotonic() + limit
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the build ended before {path.name}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


def test_a_killed_worker_process_fails_the_stage_cleanly_and_the_next_build_resumes(tmp_path):
    proj = Proj(tmp_path / "p", one_stage(10, "concurrency: 2\nexecutor: process"))
    done = proj.run(KILL_AT="a:4", BUILD="killed")
    assert done.returncode == 1
    assert "did not come back: a worker process ended abruptly while it was in flight" \
        in done.stderr
    rec = proj.record("a")
    assert rec["status"] == "failed"
    listed = {b["index"] for b in rec["batches"]}
    assert 4 not in listed
    done = proj.run("-q", BUILD="again")
    assert done.returncode == 0, done.stderr
    assert sorted(i for _, i in proj.calls("again")) == sorted(set(range(10)) - listed)
    reference = Proj(tmp_path / "ref", one_stage(10))
    assert reference.run("-q").returncode == 0
    assert outputs(proj) == outputs(reference)


def test_batch_threads_run_in_the_stage_threads_context(tmp_path, monkeypatch):
    """Contract: a ContextVar set in the stage thread (which stage's log or code tracker is
    current, under -j) is what each batch thread sees."""
    import contextvars
    import sys

    import buildtool.kinds.generate as generate

    var: contextvars.ContextVar[str] = contextvars.ContextVar("c10a_var", default="unset")
    holder = type(sys)("c10a_var")
    holder.var = var
    monkeypatch.setitem(sys.modules, "c10a_var", holder)
    real = generate._run_concurrently

    def run_concurrently(*args, **kwargs):
        var.set("the stage's")
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "_run_concurrently", run_concurrently)
    proj = Proj(tmp_path / "p", one_stage(6, "concurrency: 3"))
    (proj.root / "stages" / "gen.py").write_text(
        "import threading\nimport c10a_var\n\n"
        "def rows(ctx):\n"
        "    return [{'seen': c10a_var.var.get(), 'main': threading.current_thread() is "
        "threading.main_thread()}]\n")
    from buildtool import api

    report = api.build(proj.root / "Workflowfile")
    assert report.ok
    import pyarrow.parquet as pq

    rows = [r for b in proj.record("a")["batches"]
            for r in pq.read_table(proj.artifacts / b["file"]).to_pylist()]
    assert rows and all(r == {"seen": "the stage's", "main": False} for r in rows)
