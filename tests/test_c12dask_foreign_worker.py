"""A build leaves nothing on the scheduler that a worker without this dd-build trips on: a
worker that joins later (another team's, or one with an older dd-build: its tasks say so,
daskwork.other_dd_build) still starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from c12dask_support import (
    free_port,
    needs_dask,
    repo_env,
    start_scheduler,
    start_worker,
    stop,
    wait_for_workers,
)
from conftest import Project

pytestmark = needs_dask


def _worker_without_daskslots(address: str, port: int, folder: Path
                              ) -> subprocess.Popen[bytes]:
    """A worker whose Python cannot import buildtool.daskslots (as with a dd-build before it,
    or none), at 127.0.0.1:`port`."""
    folder.mkdir(parents=True, exist_ok=True)
    code = ("import sys; sys.modules['buildtool.daskslots'] = None; "
            f"sys.argv = ['dask-worker', {address!r}, '--no-nanny', '--nthreads', '1', "
            f"'--host', '127.0.0.1', '--worker-port', '{port}']; "
            "from distributed.cli.dask_worker import main; main()")
    return subprocess.Popen([sys.executable, "-c", code], cwd=folder, env=repo_env(),
                            stdout=subprocess.DEVNULL, stderr=open(folder / "worker.log", "wb"))


def test_a_worker_without_this_dd_build_joins_after_a_build(tmp_path: Path) -> None:
    from distributed import Client

    scheduler, address = start_scheduler(tmp_path / "scheduler")
    ours = start_worker(address, tmp_path / "ours", threads=2)
    procs = [scheduler, ours]
    try:
        wait_for_workers(address, 1)
        proj = Project(tmp_path / "proj")
        proj.write("code/g.py", """
def rows(ctx):
    return [{"i": ctx.offset + k} for k in range(ctx.size)]
""")
        proj.write("Workflowfile", """workflow: demo
stages:
  s:
    generate: code/g.py:rows
    num_records: 4
    batch_size: 1
    concurrency: 2
""")
        done = proj.run("--scheduler", address)
        assert done.code == 0, done.stderr
        port = free_port()
        other = _worker_without_daskslots(address, port, tmp_path / "other")
        procs.append(other)
        # it computes a task (it has started: a worker that fails to start computes none;
        # it says so at once, so 60 s is ample)
        with Client(address, set_as_default=False) as client:
            future = client.submit(os.getpid, workers=[f"tcp://127.0.0.1:{port}"], pure=False)
            try:
                assert future.result(timeout=60) == other.pid
            except TimeoutError:
                log = (tmp_path / "other" / "worker.log").read_text()
                raise AssertionError(f"the worker never computed: {log[-2000:]}") from None
    finally:
        stop(*[p for p in procs if p.poll() is None])
