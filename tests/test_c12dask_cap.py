"""`concurrency:` on a Dask cluster is batches computing at once, whatever the cluster's threads
and whatever is sent ahead (daskslots.py: twice the concurrency is sent, each worker holding its
share): on the CI cluster (2 workers x 4 threads), no more batches compute at once than
`concurrency` although more threads are free; after a failed batch no batch starts; after
Ctrl-C, or the client SIGKILLed, no batch sent ahead starts. On a cluster of its own, a worker
killed mid-stage costs no wait: its share goes to the other worker, which then computes
`concurrency` batches at once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from c12dask_support import (
    ADDRESS,
    most_at_once,
    needs_cluster,
    needs_dask,
    start_scheduler,
    start_worker,
    stop,
    wait_for_workers,
)
from conftest import Project

# Each batch marks when its code started and ended (worker and test share this machine's
# clock); `fail` fails that batch at once; `hold` makes every other batch wait for marks/go.
CODE = '''
import os
import time
from pathlib import Path

MARKS = Path(__file__).resolve().parent.parent / "marks"


def rows(ctx):
    MARKS.mkdir(exist_ok=True)
    start = time.time()
    (MARKS / f"start-{ctx.batch_index}").write_text(str(start))
    if ctx.batch_index == ctx.params.get("fail"):
        raise ValueError("this batch fails")
    if os.getpid() == ctx.params.get("victim"):
        (MARKS / "victim").write_text(str(time.time()))
        while True:  # until the test kills this worker
            time.sleep(0.05)
    deadline = time.monotonic() + 60
    while ctx.params.get("hold") and not (MARKS / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(ctx.params.get("sleep_s", 0))
    (MARKS / f"span-{ctx.batch_index}").write_text(f"{start} {time.time()}")
    return [{"i": ctx.offset + k, "r": ctx.rng.random()} for k in range(ctx.size)]
'''


def _project(root: Path, records: int, concurrency: int, params: str) -> Project:
    """One generate stage of one-row batches, no retries."""
    proj = Project(root)
    proj.write("code/g.py", CODE)
    proj.write("Workflowfile", f"""workflow: demo
stages:
  s:
    generate: code/g.py:rows
    num_records: {records}
    batch_size: 1
    concurrency: {concurrency}
    retries: 0
    params: {{{params}}}
""")
    return proj


def _starts(proj: Project) -> dict[int, float]:
    marks = proj.root / "marks"
    return {int(p.name.removeprefix("start-")): float(p.read_text())
            for p in marks.glob("start-*")} if marks.is_dir() else {}


def _span(text: str) -> tuple[float, float]:
    start, end = text.split()
    return float(start), float(end)


@needs_cluster
def test_no_more_batches_compute_at_once_than_concurrency_with_more_threads_free(
        tmp_path: Path) -> None:
    assert ADDRESS is not None
    proj = _project(tmp_path, 12, 3, "sleep_s: 0.3")
    done = proj.run("--scheduler", ADDRESS)
    assert done.code == 0, done.stderr
    spans = [_span(p.read_text()) for p in (proj.root / "marks").glob("span-*")]
    assert len(spans) == 12
    # 8 threads are free: the client holds them to 3
    assert 2 <= most_at_once(spans) <= 3


@needs_cluster
def test_after_a_failed_batch_no_batch_starts(tmp_path: Path) -> None:
    assert ADDRESS is not None
    proj = _project(tmp_path, 6, 1, "fail: 0, sleep_s: 0.5")
    done = proj.run("--scheduler", ADDRESS)
    assert done.code == 1, done.stderr
    assert "this batch fails" in done.stderr
    starts = _starts(proj)
    # after the failing batch 0 has started, no batch starts (whatever ran before it)
    assert 0 in starts and set(starts) <= {0, 1}, starts
    assert all(at < starts[0] for index, at in starts.items() if index != 0), starts
    record = proj.record("s")
    assert record["status"] == "failed"
    assert [b["index"] for b in record["batches"]] == sorted(set(starts) - {0})


@needs_cluster
@pytest.mark.parametrize("kill", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_after_ctrl_c_or_a_killed_client_no_batch_sent_ahead_starts(
        tmp_path: Path, kill: signal.Signals) -> None:
    assert ADDRESS is not None
    proj = _project(tmp_path, 12, 2, "hold: true")
    build = proj.start("--scheduler", ADDRESS)
    try:
        deadline = time.monotonic() + 60
        while len(_starts(proj)) < 2:  # both batches in flight started
            assert build.poll() is None, build.communicate()
            assert time.monotonic() < deadline, "the batches never started"
            time.sleep(0.02)
        build.send_signal(kill)
        out, err = build.communicate(timeout=60)
    finally:
        if build.poll() is None:
            build.kill()
            build.communicate()
    assert build.returncode == (130 if kill == signal.SIGINT else -signal.SIGKILL), err
    held = set(_starts(proj))
    (proj.root / "marks" / "go").write_text("x")  # the two held batches end now
    # a batch sent ahead and still waiting anywhere would start once the held ones end (a
    # bounded wait for something that must not happen)
    time.sleep(3)
    assert set(_starts(proj)) == held


@needs_dask
def test_a_worker_killed_mid_stage_its_share_goes_to_the_other_worker(tmp_path: Path) -> None:
    """2 workers, concurrency 2: one each. Once the victim is killed, the survivor computes 2
    at once (one at a time would be the victim's slot lost with it)."""
    scheduler, address = start_scheduler(tmp_path / "scheduler")
    victim = start_worker(address, tmp_path / "victim", threads=2)
    other = start_worker(address, tmp_path / "other", threads=2)
    try:
        wait_for_workers(address, 2)
        proj = _project(tmp_path / "proj", 24, 2, f"victim: {victim.pid}, sleep_s: 0.3")
        build = proj.start("--scheduler", address)
        deadline = time.monotonic() + 60
        while not (proj.root / "marks" / "victim").exists():  # a synchronisation point
            assert build.poll() is None, build.communicate()
            assert time.monotonic() < deadline, "no batch reached the victim"
            time.sleep(0.02)
        stop(victim)
        killed = time.time()
        out, err = build.communicate(timeout=240)
        assert build.returncode == 0, err
        assert proj.record("s")["status"] == "completed"
    finally:
        stop(*[p for p in (victim, other) if p.poll() is None], scheduler)
    spans = [_span(p.read_text()) for p in (proj.root / "marks").glob("span-*")]
    assert len(spans) == 24
    assert most_at_once(spans) <= 2
    assert most_at_once([span for span in spans if span[0] > killed]) == 2
