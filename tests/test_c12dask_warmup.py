"""Connecting to Dask while the build does something else (daskexec.Cluster.warm_up).

As soon as the plan says a stage will run on the cluster, dask is imported and the client
connects in a thread of its own, so that a `run` stage before it (which stays on the client)
overlaps with it; a null build still imports nothing (test_c12dask_config.py), and a scheduler
that cannot be reached is said by each stage that needs it, not by the warm-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from c12dask_support import ADDRESS, needs_cluster, needs_dask
from conftest import Project

# A run stage that waits (up to 60 s) until the scheduler has a client that was not there
# before the build (the test lists those) and is not its own: dd-build's, connected while this
# stage runs. It writes a seed of one row saying whether it saw one.
WAIT = '''\
import os
import sys
import time

from distributed import Client

address, before, out = sys.argv[1], set(sys.argv[2].split(",")), sys.argv[3]


def clients(dask_scheduler):
    return list(dask_scheduler.clients)


seen = False
with Client(address, timeout=30) as me:
    deadline = time.monotonic() + 60
    while not seen and time.monotonic() < deadline:
        seen = any(c not in before and c != me.id for c in me.run_on_scheduler(clients))
        if not seen:
            time.sleep(0.1)
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as fh:
    fh.write(f"seen\\n{int(seen)}\\n")
'''

STAGES = '''\
stages:
  fetch:
    run: {python} code/wait.py {address} {before} data/seen.csv
    code: [code/wait.py]
    outputs: [data/seen.csv]
  copy:
    generate: code/g.py:copy
    seed: fetch
'''

CODE = '''\
def copy(ctx):
    return ctx.seed_rows.to_pylist()
'''


def _clients(address: str) -> list[str]:
    from distributed import Client

    with Client(address, timeout=30) as client:
        listed = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.clients))
        return [c for c in listed if c != client.id]


@needs_cluster
def test_the_client_connects_while_a_run_stage_before_the_cluster_stage_runs(
        tmp_path: Path) -> None:
    assert ADDRESS is not None
    proj = Project(tmp_path)
    proj.write("code/wait.py", WAIT)
    proj.write("code/g.py", CODE)
    before = ",".join(_clients(ADDRESS)) or "-"
    proj.write("Workflowfile", "workflow: demo\n" + STAGES.format(
        python=sys.executable, address=ADDRESS, before=before))
    result = proj.run("--scheduler", ADDRESS)
    assert result.code == 0, result.stderr
    assert (tmp_path / "data" / "seen.csv").read_text().split() == ["seen", "1"]
    assert f"dask: connected to {ADDRESS}" in result.stderr  # said once, by the stage


@needs_dask
def test_an_unreachable_scheduler_is_said_by_each_stage_that_needs_it(tmp_path: Path) -> None:
    proj = Project(tmp_path)
    proj.write("code/g.py", "def rows(ctx):\n    return [{'i': ctx.offset}]\n")
    proj.write("Workflowfile", "workflow: demo\nstages:\n"
               "  a:\n    generate: code/g.py:rows\n    num_records: 1\n"
               "  b:\n    generate: code/g.py:rows\n    num_records: 1\n")
    result = proj.run("-k", "--scheduler", "tcp://127.0.0.1:9",
                      DD_BUILD_DASK_CONNECT_TIMEOUT_S="1")
    assert result.code == 1, result.stderr
    for stage in ("a", "b"):
        assert f"✗ {stage}: failed" in result.stderr
    assert result.stderr.count("cannot reach the Dask scheduler at tcp://127.0.0.1:9") == 2
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


# RFC 2606: no name under .invalid resolves (the resolver says so without the network).
NO_HOST = "no-such-host.invalid"


@needs_dask
@pytest.mark.parametrize(("args", "env"), [
    (("--scheduler", f"tcp://{NO_HOST}:8786"), {}),
    (("--executor", "dask"), {"DD_BUILD_SCHEDULER": f"{NO_HOST}:8786"}),
], ids=["--scheduler", "DD_BUILD_SCHEDULER"])
def test_a_scheduler_host_that_cannot_be_resolved_is_said_at_once(
        tmp_path: Path, args: tuple[str, ...], env: dict[str, str]) -> None:
    """A host with no address fails the stages that need the cluster as soon as the resolver
    says so, naming the host, with the hint of an unreachable scheduler: not after the connect
    timeout (set far above the wait allowed here, which is the failure signal)."""
    proj = Project(tmp_path)
    proj.write("code/g.py", "def rows(ctx):\n    return [{'i': ctx.offset}]\n")
    proj.write("Workflowfile", "workflow: demo\nstages:\n"
               "  a:\n    generate: code/g.py:rows\n    num_records: 1\n"
               "  b:\n    generate: code/g.py:rows\n    num_records: 1\n")
    try:
        proc = subprocess.run([sys.executable, "-m", "buildtool", "-k", *args], cwd=tmp_path,
                              env=proj.env(DD_BUILD_DASK_CONNECT_TIMEOUT_S="600", **env),
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the build was still running after 120 s: the unresolvable host was not "
                    "said before the connect timeout (600 s)")
    assert proc.returncode == 1, proc.stderr
    said = [line for line in proc.stderr.splitlines() if "cannot reach the Dask scheduler" in line]
    assert len(said) == 2, proc.stderr  # each stage
    assert all(f"{NO_HOST} cannot be resolved" in line for line in said), proc.stderr
    assert "--executor local" in proc.stderr  # the hint
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


@needs_dask
def test_a_build_whose_dask_stages_are_up_to_date_imports_no_dask(tmp_path: Path) -> None:
    """A run stage runs, the generate stage is up to date: nothing is warmed up."""
    proj = Project(tmp_path)
    proj.write("code/g.py", "def rows(ctx):\n    return [{'i': ctx.offset}]\n")
    proj.write("data/x.txt", "1\n")
    proj.write("Workflowfile", "workflow: demo\nstages:\n"
               "  a:\n    generate: code/g.py:rows\n    num_records: 1\n"
               "  r:\n    run: cp data/x.txt out.txt\n    inputs: [data/x.txt]\n"
               "    outputs: [out.txt]\n")
    assert proj.run("--executor", "local").code == 0
    proj.write("data/x.txt", "2\n")  # r runs again, a is up to date
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "buildtool",
                           "--scheduler", "tcp://127.0.0.1:9"], cwd=tmp_path,
                          env=proj.env(DD_BUILD_DASK_CONNECT_TIMEOUT_S="1"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.txt").read_text() == "2\n"
    assert " distributed\n" not in proc.stderr and " dask\n" not in proc.stderr
