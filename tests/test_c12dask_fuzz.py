"""The correctness fuzzer (tests/fuzz_support.py) with most builds on a real Dask cluster.

Code edits through a sequence whose builds mostly run on the same long-lived workers
(.ci/with-dask-cluster's, `DD_BUILD_TEST_SCHEDULER`): stage code constants and comments,
helper modules imported at the top (`helpers.text`, which imports `helpers.base`) and inside
the function (`helpers.lazy`), callbacks' code, same-second edits, stages named by module
(`stages.sN:make`) or by file, generate stages with `concurrency` > 1, flaky batches retried
on a worker. After every build its outputs must be byte-identical to a from-scratch local
serial build's, and nothing may run without a reason (tests/fuzz_support.py, (a)-(c)).

Seeds (each replays with `python benchmarks/fuzz_correctness.py --examples 1 --seed S
--focus F --scheduler $DD_BUILD_TEST_SCHEDULER --dask 0.7`). Before the code bundle (c926bc6;
at 9e41b8b) helpers 2, 3 and 303 failed: on workers without a copy of the project (as here)
the lazy `from helpers.lazy import KL` raised ModuleNotFoundError in the first build on
Dask; on workers with the project on their path, the first build on Dask recorded no lazy
import, so after an edit of helpers/lazy.py the next build left the stage up to date
(stale: its rows carried the old KL, and so did its dependants'). mixed 0 has concurrency
and callbacks on the cluster besides.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
from c12dask_support import ADDRESS, needs_cluster
from fuzz_support import ReferenceBuilds, run_seed

DASK = 0.7  # the share of builds on the cluster; the rest run locally in between
ROUNDS = 5

_REFERENCES: ReferenceBuilds | None = None


def _references() -> ReferenceBuilds:
    global _REFERENCES
    if _REFERENCES is None:
        folder = tempfile.mkdtemp(prefix="dd-dask-fuzz-scratch-")
        atexit.register(shutil.rmtree, folder, True)
        _REFERENCES = ReferenceBuilds(Path(folder))
    return _REFERENCES


SEEDS = [("helpers", 2), ("helpers", 3), ("helpers", 303), ("mixed", 0)]


@needs_cluster
@pytest.mark.parametrize(("focus", "seed"), SEEDS, ids=[f"{f}-{s}" for f, s in SEEDS])
def test_code_edits_on_a_dask_cluster_are_never_stale_and_never_wasteful(focus: str, seed: int
                                                                         ) -> None:
    with tempfile.TemporaryDirectory(prefix="dd-dask-fuzz-") as tmp:
        result = run_seed(seed, Path(tmp) / "proj", _references(), rounds=ROUNDS, focus=focus,
                          scheduler=ADDRESS, dask=DASK)
    assert not result.violations, result.report()
    assert result.seen["dask builds"], result.report()
