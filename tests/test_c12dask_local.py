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
