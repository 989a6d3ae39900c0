"""SIGKILL at random moments of concurrent builds (issue 10), then a serial rebuild: the
output equals an uninterrupted serial build's, every record stays readable and consistent,
and no batch is regenerated beyond those in flight at each kill (the crash fuzzer of
tests/crash_support.py with `concurrency_share`: killed builds run the generate stages with
2-16 batches in flight, in threads or worker processes)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import crash_support as cs
import pytest


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> cs.Fuzzer:
    fuzzer = cs.Fuzzer(tmp_path_factory.mktemp("reference"), cs.Config())
    fuzzer.prepare()
    return fuzzer


def test_seeded_random_kills_of_concurrent_builds(calibrated, tmp_path: Path):
    fuzzer = cs.Fuzzer(tmp_path / "fuzz", cs.Config(kills=12, seed=1010, concurrency_share=0.9,
                                                    force_share=0.3))
    fuzzer.adopt(calibrated)
    fig = fuzzer.fuzz()
    assert fig.problems == [], "\n".join(fig.problems)
    assert fig.violations == 0, "\n".join(fig.lines())
    assert fuzzer.concurrent_kills >= 6
    assert fig.mid_stage >= 3


def test_the_allowance_counts_every_batch_a_concurrent_build_had_in_flight():
    # build 1 (killed) called batches 0-3 at once; 0 and 2 were listed after the kill
    calls = [("1", "seeds", "0"), ("1", "seeds", "1"), ("1", "seeds", "2"), ("1", "seeds", "3"),
             ("2", "seeds", "1"), ("2", "seeds", "3")]
    base = Counter({("seeds", str(i)): 1 for i in range(4)})
    in_flight = {"1": {("seeds", "1"), ("seeds", "3")}}
    assert cs.excess_calls(calls, base, ["1"], in_flight) == ([], 2)
    beyond, _ = cs.excess_calls(calls + [("2", "seeds", "0")], base, ["1"], in_flight)
    assert beyond == ["seeds 0: called 2 times, allowed 1"]
