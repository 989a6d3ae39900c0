"""Crash safety on the wider project of tests/crash_support_wide.py (issue 7).

A flaky batch retried (`retries`, its first attempt raising after drawing from ctx.rng), an
on_success callback switched between builds, and a run stage whose folder output shrinks from
three part files to two: SIGKILLed at named steps and at seeded random moments, the completed
build must equal an untroubled, uninterrupted fresh build of the same version, with every
record readable after each kill, nothing left over, no call repeated beyond the one in flight,
and a null build that runs nothing.
"""

from __future__ import annotations

from pathlib import Path

import crash_support as cs
import crash_support_wide as wide
import pytest


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> wide.WideFuzzer:
    """The untroubled references: version 1 fresh, version 1 then 2, version 2 fresh."""
    fuzzer = wide.WideFuzzer(tmp_path_factory.mktemp("wide-reference"), wide.WideConfig())
    fuzzer.prepare()
    return fuzzer


def make_fuzzer(prepared: wide.WideFuzzer, tmp_path: Path, **config: float) -> wide.WideFuzzer:
    fuzzer = wide.WideFuzzer(tmp_path / "fuzz", wide.WideConfig(**config))  # type: ignore[arg-type]
    fuzzer.adopt(prepared)
    return fuzzer


def assert_clean(fig: cs.Figures) -> None:
    assert fig.problems == [], "\n".join(fig.problems)
    assert fig.violations == 0, "\n".join(fig.lines())


def test_the_edit_without_kills_equals_a_fresh_build(prepared):
    # Switching the callback and shrinking the run stage's folder (3 part files to 2), built
    # without any kill, gives what a fresh build of the edited project gives: no part-2 left.
    assert_clean(prepared.figures)


def test_a_kill_at_each_wide_window_resumes_to_the_untroubled_result(prepared, tmp_path):
    fuzzer = make_fuzzer(prepared, tmp_path, max_kills_per_phase=1)
    fuzzer.round(0, [target for target, _ in wide.WIDE_WINDOWS])

    assert_clean(fuzzer.figures)
    landed = [(x.stage, x.label) for x in fuzzer.landings[-len(wide.WIDE_WINDOWS):]]
    assert landed == [tuple(t.split(":")) for t, _ in wide.WIDE_WINDOWS]


def test_seeded_random_kills_on_the_wide_project(prepared, tmp_path):
    fuzzer = make_fuzzer(prepared, tmp_path, kills=8, seed=20240712)
    fig = fuzzer.fuzz()

    assert_clean(fig)
    assert fig.kills >= 8
