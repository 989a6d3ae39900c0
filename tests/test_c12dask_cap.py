"""`concurrency:` on a Dask cluster is batches computing at once, whatever the cluster's threads
(the client sends no more): on the CI cluster (2 workers x 4 threads), no more batches compute
at once than `concurrency` although more threads are free; after a failed batch no batch
starts; after Ctrl-C no batch starts. (Guards for any scheme that sends batches ahead: one
with a cluster-wide semaphore was tried and measured, see the closing note of issue 12.)"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from c12dask_support import ADDRESS, needs_cluster
from conftest import Project

pytestmark = needs_cluster

# Each batch marks when its code started and ended (worker and test share this machine's
# clock); `fail` fails that batch at once; `hold` makes every other batch wait for marks/go.
CODE = '''
import time
from pathlib import Path

MARKS = Path(__file__).resolve().parent.parent / "marks"


def rows(ctx):
    MARKS.mkdir(exist_ok=True)
    start = time.time()
    (MARKS / f"start-{ctx.batch_index}").write_text(str(start))
    if ctx.batch_index == ctx.params.get("fail"):
        raise ValueError("this batch fails")
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


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in events:  # an end before a start at the same instant
        now += step
        most = max(most, now)
    return most


def test_no_more_batches_compute_at_once_than_concurrency_with_more_threads_free(
        tmp_path: Path) -> None:
    assert ADDRESS is not None
    proj = _project(tmp_path, 12, 3, "sleep_s: 0.3")
    done = proj.run("--scheduler", ADDRESS)
    assert done.code == 0, done.stderr
    spans = [_span(p.read_text()) for p in (proj.root / "marks").glob("span-*")]
    assert len(spans) == 12
    # 8 threads are free: the client holds them to 3
    assert 2 <= _most_at_once(spans) <= 3


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


def test_after_ctrl_c_no_batch_sent_starts(tmp_path: Path) -> None:
    assert ADDRESS is not None
    proj = _project(tmp_path, 12, 2, "hold: true")
    build = proj.start("--scheduler", ADDRESS)
    try:
        deadline = time.monotonic() + 60
        while len(_starts(proj)) < 2:  # both batches in flight started
            assert build.poll() is None, build.communicate()
            assert time.monotonic() < deadline, "the batches never started"
            time.sleep(0.02)
        build.send_signal(signal.SIGINT)
        out, err = build.communicate(timeout=60)
    finally:
        if build.poll() is None:
            build.kill()
            build.communicate()
    assert build.returncode == 130, err
    held = set(_starts(proj))
    (proj.root / "marks" / "go").write_text("x")  # the two held batches end now
    # a batch still queued anywhere would start once the held ones end (a bounded wait for
    # something that must not happen)
    time.sleep(3)
    assert set(_starts(proj)) == held
