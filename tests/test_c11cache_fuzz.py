"""The correctness fuzzer with revert edits (issue 11): after every build, no stage is stale
(its output equals a from-scratch build's) and no stage whose trace was built before runs
again — it is restored from the build cache (`Sequence._not_restored`; that check runs in
every focus). `python benchmarks/fuzz_correctness.py --focus reverts` runs many more."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzz_support import ReferenceBuilds, run_seed

SEEDS = range(1100, 1106)
SEEN: Counter[str] = Counter()  # what the examples did, summed (checked last)


@pytest.fixture(scope="module")
def references() -> Iterator[ReferenceBuilds]:
    folder = tempfile.mkdtemp(prefix="dd-fuzz-c11-")
    try:
        yield ReferenceBuilds(Path(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_reverts_are_never_stale_and_run_nothing(tmp_path: Path, seed: int,
                                                 references: ReferenceBuilds) -> None:
    result = run_seed(seed, tmp_path / "proj", references, rounds=7, focus="reverts")
    SEEN.update(result.seen)
    assert not result.violations, result.report()


def test_the_revert_focus_reverts() -> None:
    """The focus does what it is for (after the examples above ran): reverts happen."""
    if not SEEN:
        pytest.skip("run with the examples above")
    assert SEEN["edit revert"] >= 3, SEEN
