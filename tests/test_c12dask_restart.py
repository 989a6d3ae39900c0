"""A Dask worker killed and started again at the same address (a fixed --worker-port, as a
service manager or a pod restarts it) is a new worker for a generate stage's shares: a batch
sent while its former process was alive carries that process's share, and the new process must
not take it. The client had handed the dead process's share to the other worker already, so
taking it would compute more batches at once than `concurrency` (daskslots.py)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from c12dask_support import (
    free_port,
    most_at_once,
    needs_dask,
    start_scheduler,
    start_worker,
    stop,
    wait_for_workers,
)
from conftest import Project

pytestmark = needs_dask

# Each batch marks its start (with the worker's pid) and its end; batches from `quick` on hold
# until marks/go exists, so the test decides when the held ones end.
CODE = '''
import os
import time
from pathlib import Path

MARKS = Path(__file__).resolve().parent.parent / "marks"


def rows(ctx):
    MARKS.mkdir(exist_ok=True)
    start = time.time()
    (MARKS / f"start-{ctx.batch_index}").write_text(f"{start} {os.getpid()}")
    deadline = time.monotonic() + 120
    while (ctx.batch_index >= ctx.params["quick"] and not (MARKS / "go").exists()
           and time.monotonic() < deadline):
        time.sleep(0.02)
    time.sleep(0.2)
    (MARKS / f"span-{ctx.batch_index}").write_text(f"{start} {time.time()}")
    return [{"i": ctx.offset + k} for k in range(ctx.size)]
'''


def _until(ready: Callable[[], bool], what: str, build: subprocess.Popen[str]) -> None:
    """A synchronisation point: until `ready()`, the build still running."""
    deadline = time.monotonic() + 60
    while not ready():
        assert build.poll() is None, build.communicate()
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_worker_started_again_at_the_same_address_takes_no_share_of_its_former_process(
        tmp_path: Path) -> None:
    """2 workers of 4 threads, concurrency 4: 2 each. X is killed while holding 2; once Y holds
    4 (X's share is Y's), X is started again at the same address. Batches sent while the
    former X lived sit on Y waiting for a thread; the new X steals them. Without the fix it
    computes 2 of them at once (the old X's share they carry) beside Y's 4."""
    scheduler, address = start_scheduler(tmp_path / "scheduler")
    port = free_port()
    x = start_worker(address, tmp_path / "x", threads=4, port=port)
    y = start_worker(address, tmp_path / "y", threads=4)
    procs = [scheduler, x, y]
    proj = Project(tmp_path / "proj")
    marks = proj.root / "marks"

    def held(pid: int) -> list[int]:
        found = []
        for mark in marks.glob("start-*") if marks.is_dir() else []:
            parts = mark.read_text().split()
            index = int(mark.name.removeprefix("start-"))
            if len(parts) == 2 and int(parts[1]) == pid and \
                    not (marks / f"span-{index}").exists():
                found.append(index)
        return found

    try:
        wait_for_workers(address, 2)
        proj.write("code/g.py", CODE)
        proj.write("Workflowfile", """workflow: demo
stages:
  s:
    generate: code/g.py:rows
    num_records: 24
    batch_size: 1
    concurrency: 4
    retries: 0
    params: {quick: 4}
""")
        build = proj.start("--scheduler", address)
        try:
            _until(lambda: len(held(x.pid)) == 2 and len(held(y.pid)) == 2,
                   "X and Y never held 2 batches each", build)
            stop(x)
            _until(lambda: len(held(y.pid)) == 4, "Y never got X's share", build)
            again = start_worker(address, tmp_path / "x-again", threads=4, port=port)
            procs.append(again)
            wait_for_workers(address, 2)
            # Y holds 4 = concurrency: a batch starting on the new X now is one too many (a
            # bounded wait for something that must not happen)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not held(again.pid):
                time.sleep(0.05)
            assert held(again.pid) == [], (held(again.pid), held(y.pid))
            (marks / "go").write_text("x")
            out, err = build.communicate(timeout=240)
        finally:
            if build.poll() is None:
                build.kill()
                build.communicate()
        assert build.returncode == 0, err
    finally:
        stop(*[p for p in procs if p.poll() is None])
    spans = []
    for mark in marks.glob("span-*"):
        start, end = mark.read_text().split()
        spans.append((float(start), float(end)))
    assert len(spans) == 24
    assert most_at_once(spans) <= 4
