"""Generated: the plan with the planning index is the plan without it, over random edits.

The correctness fuzzer's sequences (tests/fuzz_support.py: random workflows, then rounds of
random edits — params, code, helpers, callbacks, file inputs, deleted or rewritten batch and
step files, `clean`, review overrides and releases — each followed by a build) run as they
do there, index and all; before every build, the dry-run plan of that build (`-n --json`
with its flags and targets) is made twice, with `.plan-index` in place and moved away, and
the two must be equal. The sequence's own checks (never stale, never wasteful) hold too.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fuzz_support import ReferenceBuilds, Sequence, run_cli
from fuzz_workflows import FOCUS, WORKFLOW
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("DD_NBINDEX_EXAMPLES", "4"))
INDEX = ".plan-index"

_REFERENCES: ReferenceBuilds | None = None


def _references() -> ReferenceBuilds:
    global _REFERENCES
    if _REFERENCES is None:
        folder = tempfile.mkdtemp(prefix="dd-nbindex-scratch-")
        atexit.register(shutil.rmtree, folder, True)
        _REFERENCES = ReferenceBuilds(Path(folder))
    return _REFERENCES


class IndexedSequence(Sequence):
    """A fuzz sequence that compares each build's plan with and without the index first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mismatches: list[str] = []
        self.compared = 0
        self.indexed = 0  # comparisons made with an index in place

    def build(self, flags: list[str], targets: list[str]) -> bool:
        self.compare([*flags, *targets])
        return super().build(flags, targets)

    def compare(self, args: list[str]) -> None:
        index = self.root / "artifacts" / WORKFLOW / INDEX
        with_index = _plan(self.root, args)
        had = index.exists()
        aside = self.root.parent / f"{self.root.name}-index-aside"
        if had:
            index.rename(aside)
        try:
            without = _plan(self.root, args)
        finally:
            if had:
                aside.rename(index)
        self.compared += 1
        self.indexed += had
        if with_index != without:
            self.mismatches.append(f"build {self.builds + 1} ({' '.join(args) or 'all'}):\n"
                                   f"  with the index:    {with_index}\n"
                                   f"  without the index: {without}")


def _plan(root: Path, args: list[str]) -> Any:
    proc = run_cli(root, "-n", "--json", *args)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return (proc.returncode, proc.stdout, proc.stderr)


def _run(seed: int, focus: str) -> IndexedSequence:
    import random

    with tempfile.TemporaryDirectory(prefix="dd-nbindex-") as tmp:
        seq = IndexedSequence(random.Random(seed), Path(tmp) / "proj", _references(), 5, False,
                              FOCUS[focus])
        result = seq.run()
    assert not result.violations, result.report()
    assert not seq.mismatches, "\n".join(seq.mismatches)
    assert seq.indexed >= 1, "no build was planned with an index in place"
    return seq


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          phases=(Phase.explicit, Phase.reuse, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_plans_with_and_without_the_index_are_equal(seed: int) -> None:
    _run(seed, "mixed")


def test_plans_with_and_without_the_index_are_equal_through_overrides() -> None:
    # Overrides and releases rewrite records outside a build: the index must see each.
    _run(105, "overrides")
