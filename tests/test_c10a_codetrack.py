"""Code tracking with batches in threads or worker processes (issue 10): a project module the
stage's function imports lazily, only inside a batch, is part of the stage's record even when
only a worker process ran that import, so editing it reruns the stage (never a stale output)."""

from __future__ import annotations

import json
import signal

import pytest
from c10a_support import Proj, one_stage
from test_c10a_outputs import wait_for

LAZY_CODE = '''\
import os
import time
from pathlib import Path


def rows(ctx):
    import lazyhelp  # only ever imported here, in the batch call

    if os.environ.get("HANG_AT") == f"a:{ctx.batch_index}":
        root = Path(__file__).resolve().parents[1]
        while len(list((root / "artifacts/demo/a/batches").glob("*.parquet"))) < 5:
            time.sleep(0.01)
        (root / "reached").write_text("x")
        while True:
            time.sleep(0.05)
    return lazyhelp.rows(ctx)
'''


def helper(value: int) -> str:
    return f"VALUE = {value}\n\n\ndef rows(ctx):\n" \
           "    return [{'v': VALUE, 'id': ctx.offset + i} for i in range(ctx.size)]\n"


def lazy_project(root, executor: str) -> Proj:
    proj = Proj(root, one_stage(6, f"concurrency: 2\nexecutor: {executor}"))
    (proj.root / "stages" / "gen.py").write_text(LAZY_CODE)
    (proj.root / "lazyhelp.py").write_text(helper(1))
    return proj


def values(proj: Proj) -> set[int]:
    import pyarrow.parquet as pq

    return {v for b in proj.record("a")["batches"]
            for v in pq.read_table(proj.artifacts / b["file"]).column("v").to_pylist()}


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_lazy_import_in_a_batch_is_recorded_and_its_edit_reruns(tmp_path, executor):
    proj = lazy_project(tmp_path / "p", executor)
    assert proj.run("-q").returncode == 0
    found = proj.record("a")["discovered"]
    assert "lazyhelp.py" in found and found["lazyhelp.py"]["by"] == "stages/gen.py"
    assert proj.run("-q").returncode == 0  # a null build: nothing changed
    (proj.root / "lazyhelp.py").write_text(helper(2))
    done = proj.run("--json")
    assert done.returncode == 0, done.stderr
    result = next(s for s in json.loads(done.stdout)["stages"] if s["stage"] == "a")
    assert result["result"] == "completed" and result["batches_run"] == 6
    assert values(proj) == {2}


def test_a_worker_import_journaled_before_a_kill_survives_the_resume(tmp_path):
    # killed with 5 batches made in workers; the edit of the lazily imported module then
    # makes the next build run the stage fresh, not resume it with batches of the old code
    proj = lazy_project(tmp_path / "p", "process")
    build = proj.start("-q", HANG_AT="a:5")
    wait_for(proj.root / "reached", build)
    build.send_signal(signal.SIGKILL)
    build.wait(timeout=60)
    (proj.root / "lazyhelp.py").write_text(helper(2))
    done = proj.run("-q")
    assert done.returncode == 0, done.stderr
    assert values(proj) == {2}
