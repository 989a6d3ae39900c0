"""DaskBatches sends the batches submitted while others were being written as one graph (one
message for the scheduler instead of one per batch). On the CI cluster: the batches are the
bytes of a local build, and fewer graphs were sent than batches ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from c10b_support import built_state
from c12dask_support import ADDRESS, needs_cluster
from conftest import Project

pytestmark = needs_cluster

CODE = '''
def rows(ctx):
    return [{"i": ctx.offset + k, "r": ctx.rng.random(), "b": ctx.batch_index}
            for k in range(ctx.size)]
'''

FILE = """
workflow: demo
stages:
  tiny:
    generate: code/g.py:rows
    num_records: 120
    batch_size: 2
    concurrency: 8
  seeded:
    generate: code/g.py:rows
    seed: tiny
    batch_size: 7
    concurrency: 3
"""


def _project(root: Path) -> Project:
    proj = Project(root)
    proj.write("code/g.py", CODE)
    proj.write("Workflowfile", FILE)
    return proj


def test_batches_sent_together_are_the_bytes_of_a_local_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Client

    import buildtool

    assert ADDRESS is not None
    local = _project(tmp_path / "local")
    assert local.run("--executor", "local").code == 0
    sent: list[int] = []
    real_map = Client.map

    def counted(self: Client, func: Any, *iterables: Any, **kwargs: Any) -> Any:
        sent.append(len(iterables[0]))
        return real_map(self, func, *iterables, **kwargs)

    monkeypatch.setattr(Client, "map", counted)
    on_dask = _project(tmp_path / "dask")
    report = buildtool.build(on_dask.root, scheduler=ADDRESS)
    assert report.ok
    assert built_state(on_dask.root, "demo") == built_state(local.root, "demo")
    assert sum(sent) == 60 + 18  # each batch sent once
    assert len(sent) < 60 + 18 - 7 - 2  # at least the first 8 and 3 of the stages went together
    assert max(sent) >= 8
