"""The correctness fuzzer with revert and rename edits (issue 11): after every build, no stage
is stale (its output equals a from-scratch build's; a renamed stage whose rows say its name,
or whose callback read its folder, is built again) and no stage whose trace was built before
runs again — it is restored from the build cache, also under a new name when its code reads
nothing of its name (`Sequence._not_restored`; that check runs in every focus).
`python benchmarks/fuzz_correctness.py --focus reverts` runs many more."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzz_support import ReferenceBuilds, run_seed

# 1107 and 1109 found a renamed stage restored with rows that said its old name (issue 11)
SEEDS = (*range(1100, 1106), 1107, 1109)
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
    assert SEEN["edit rename"] >= 3, SEEN
    assert SEEN["renames restored"] >= 1, SEEN  # code that reads nothing of its name
    assert SEEN["renames built again (code reads the name)"] >= 1, SEEN
