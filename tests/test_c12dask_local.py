"""`--executor dask` without an address: a LocalCluster of worker processes on this machine
for the build, stopped after; the outputs of a local serial build."""

from __future__ import annotations

from pathlib import Path

from c10b_support import built_state, jobs_project
from c12dask_support import needs_dask
from test_c10b_jobs_outputs import FAN, FAN_FILES


@needs_dask
def test_without_an_address_a_local_cluster_runs_the_build(tmp_path: Path) -> None:
    """--executor dask alone: a LocalCluster for the build, stopped after."""
    serial = jobs_project(tmp_path / "serial", FAN)
    local = jobs_project(tmp_path / "local", FAN)
    assert serial.run().code == 0
    result = local.run("--executor", "dask", "-j", "2", DD_BUILD_SCHEDULER="")
    assert result.code == 0, result.stderr
    assert "LocalCluster" in result.stderr
    assert built_state(serial.root, "demo", FAN_FILES) == \
        built_state(local.root, "demo", FAN_FILES)


LIMITED = """
workflow: demo
rate_limits:
  api: {requests_per_second: 50, max_in_flight: 2}
stages:
  g:
    generate: code/g.py:rows
    num_records: 40
    batch_size: 2
    concurrency: 4
    rate_limit: api
"""
SLOW = """
import time
from pathlib import Path

def rows(ctx):
    out = []
    for k in range(ctx.size):
        with ctx.request():
            time.sleep(0.2)
        out.append({"i": ctx.offset + k})
    (Path(__file__).parent.parent / "marks").mkdir(exist_ok=True)
    (Path(__file__).parent.parent / "marks" / f"done-{ctx.batch_index}").write_text("x")
    return out
"""


@needs_dask
def test_ctrl_c_at_the_terminal_stops_a_local_cluster_build_quietly(tmp_path: Path) -> None:
    """SIGINT to the whole process group, as a terminal sends it: the build says it was
    interrupted, without the workers' tracebacks nor Dask's warnings (found by a trial)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import Project

    proj = Project(tmp_path)
    proj.write("code/g.py", SLOW)
    proj.write("Workflowfile", LIMITED)
    build = subprocess.Popen([sys.executable, "-m", "buildtool", "--executor", "dask"],
                             cwd=proj.root, env=proj.env(DD_BUILD_SCHEDULER=""),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(proj.root.glob("marks/done-*")):  # a batch finished: the cluster runs
        assert build.poll() is None and time.monotonic() < deadline, build.communicate()
        time.sleep(0.05)
    os.killpg(build.pid, signal.SIGINT)
    _, err = build.communicate(timeout=120)
    assert build.returncode == 130, err
    assert "interrupted in 'g'" in err
    assert "Traceback" not in err and "Warning" not in err, err
