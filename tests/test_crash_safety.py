"""Crash safety: SIGKILL at any moment, then build again (issue 4 item 2; DESIGN.md §3, §5).

The harness is tests/crash_support.py (shared with benchmarks/fuzz_crash.py): a four-stage
project (generate → generate with processors, on_success and export copies → transform → run)
built by the real CLI under a probe that notes which step runs and can SIGKILL the build at a
chosen step. After every kill each stage.json must be readable JSON of the current format and
list only files that exist as recorded; after the completed build the outputs must equal an
uninterrupted build's, no temp file, stale journal or unlisted batch may remain, no user call
may repeat beyond the in-flight allowance, and a null build must run nothing.

test_cli_resume.py covers kills at known batches through the user code (HANG_AT); these kill
inside dd-build's own writes, callbacks, processors, export copies and run stages.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import crash_support as cs
import pytest


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> cs.Fuzzer:
    """One uninterrupted build: the reference outputs, its probe events and timings."""
    fuzzer = cs.Fuzzer(tmp_path_factory.mktemp("reference"), cs.Config())
    fuzzer.prepare()
    return fuzzer


def make_fuzzer(calibrated: cs.Fuzzer, tmp_path: Path, **config: float) -> cs.Fuzzer:
    fuzzer = cs.Fuzzer(tmp_path / "fuzz", cs.Config(**config))  # type: ignore[arg-type]
    fuzzer.adopt(calibrated)
    return fuzzer


def assert_clean(fig: cs.Figures) -> None:
    assert fig.problems == [], "\n".join(fig.problems)
    assert fig.violations == 0, "\n".join(fig.lines())


# ---------------------------------------------------------------- the harness's own rule


def test_in_flight_allowance_counts_the_last_call_of_each_killed_build():
    base = Counter({("a", "0"): 1, ("a", "1"): 1, ("a", "2"): 1})
    calls = [("1", "a", "0"), ("1", "a", "1"),  # build 1 killed while a 1 was in flight
             ("2", "a", "1"), ("2", "a", "2")]  # build 2 completed
    assert cs.excess_calls(calls, base, killed=["1"]) == ([], 1)
    # The same log with no kill: a 1 ran twice for nothing.
    beyond, _ = cs.excess_calls(calls, base, killed=[])
    assert beyond == ["a 1: called 2 times, allowed 1"]
    # A kill allows only its build's last call again, not an earlier one.
    calls = [("1", "a", "0"), ("1", "a", "1"), ("2", "a", "0"), ("2", "a", "2")]
    beyond, _ = cs.excess_calls(calls, base, killed=["1"])
    assert beyond == ["a 0: called 2 times, allowed 1"]


# ---------------------------------------------------------------- one kill in each window


def test_a_kill_in_each_window_resumes_to_the_uninterrupted_result(calibrated, tmp_path):
    fuzzer = make_fuzzer(calibrated, tmp_path)
    landings = fuzzer.kill_sequence(0, [target for target, _, _ in cs.WINDOWS])

    fig = fuzzer.figures
    assert_clean(fig)
    assert fig.kills == len(cs.WINDOWS) and fig.after_end == 0
    for landing, (target, expected, why) in zip(landings, cs.WINDOWS, strict=True):
        assert (landing.stage, landing.label) == cs.landing_of(target, expected), why
    # Only the run stage's command outlives its kill (it holds the lock until it ends).
    assert fig.orphans_outliving_kill == 1

    calls = Counter((stage, what) for _, stage, what in cs.read_calls(fuzzer.workdir /
                                                                        "round-0000"))
    # Batch 0 was in flight at two kills: written as a temp file, then renamed but not yet
    # journaled (that file is not trusted: deleted and made again).
    assert calls[("seeds", "0")] == 3
    # A journal line written before the kill keeps its batch, even before it is synced.
    assert calls[("seeds", "1")] == 1
    assert all(calls[("seeds", str(i))] == 1 for i in range(2, 10))
    # Batch 5 was killed just before its journal line: made again, once.
    assert calls[("enriched", "5")] == 2
    assert all(calls[("enriched", str(i))] == 1 for i in range(12) if i != 5)
    # The transform's one batch was journaled before the kill: not called again.
    assert calls[("summary", "all")] == 1


# ---------------------------------------------------------------- random kills


def test_seeded_random_kills_never_lose_work_or_leave_a_bad_state(calibrated, tmp_path):
    fuzzer = make_fuzzer(calibrated, tmp_path, kills=24, seed=20240611)
    fig = fuzzer.fuzz()

    assert_clean(fig)
    assert fig.kills == 24
    assert fig.mid_stage >= fig.kills // 4, "\n".join(fig.lines())


# ---------------------------------------------------------------- regressions


def _kill_then_build(fuzzer: cs.Fuzzer, target: str) -> Path:
    root = fuzzer.fresh_project(0)
    killed: list[str] = []
    fuzzer.kill_once(root, "0.0", killed, target=target)
    assert killed == ["0.0"], f"the build was not killed at {target}"
    return root


def test_workflow_json_temp_left_by_a_kill_is_removed_by_the_next_build(calibrated, tmp_path):
    # The bug: a kill while writing workflow.json left `.workflow.json.tmp.*` at the workflow
    # root, and no later build removed it (only stage folders were cleaned).
    fuzzer = make_fuzzer(calibrated, tmp_path)
    root = _kill_then_build(fuzzer, "-:summary-write>fsync#1")
    temps = list(cs.artifacts(root).glob(".workflow.json.tmp.*"))
    assert len(temps) == 1

    assert fuzzer.complete(root, "0.1")
    assert not temps[0].exists()
    assert cs.leftovers(root) == []
    assert_clean(fuzzer.figures)


def test_export_temp_left_by_a_kill_is_removed_when_the_copy_is_written(calibrated, tmp_path):
    # The bug: a kill while writing an export copy left `exports/.enriched.parquet.tmp.*` in
    # the project; the next build wrote the copy again but never removed that temp file.
    fuzzer = make_fuzzer(calibrated, tmp_path)
    root = _kill_then_build(fuzzer, "enriched:export>fsync#2")  # #1: exports/ made
    temps = list((root / "exports").glob(".enriched.parquet.tmp.*"))
    assert len(temps) == 1
    unrelated = root / "exports" / ".notes.tmp.keep"  # not a temp file of an export: kept
    unrelated.write_text("mine")

    assert fuzzer.complete(root, "0.1")
    assert not temps[0].exists()
    assert unrelated.read_text() == "mine"
    unrelated.unlink()
    assert cs.leftovers(root) == []
    assert_clean(fuzzer.figures)


def test_journal_left_beside_a_completed_record_is_removed_by_the_next_build(calibrated,
                                                                            tmp_path):
    # The bug: a kill after a stage's completed record replaced the running one but before its
    # journal was removed left `journal-*.jsonl` for good: the stage is up to date from then
    # on, and only a new attempt of it removed journals.
    fuzzer = make_fuzzer(calibrated, tmp_path)
    root = _kill_then_build(fuzzer, "seeds:finish>record-write>fsync#2")
    seeds = cs.artifacts(root) / "seeds"
    rec = (seeds / "stage.json").read_text()
    assert '"status": "completed"' in rec and '"journal": null' in rec
    journals = list(seeds.glob("journal-*"))
    assert len(journals) == 1
    calls = len(cs.read_calls(root))

    assert fuzzer.complete(root, "0.1")
    assert not journals[0].exists()
    assert not [c for c in cs.read_calls(root)[calls:] if c[1] == "seeds"]  # seeds up to date
    assert cs.leftovers(root) == []
    assert_clean(fuzzer.figures)


def test_record_temp_left_by_a_killed_forced_rerun_is_removed_by_the_next_build(calibrated,
                                                                                tmp_path):
    # The bug: `--force seeds` killed while writing seeds' new running record left
    # `seeds/.stage.json.tmp.*` beside the completed record, which stayed in place; the next
    # plain build found seeds up to date, so no attempt of it removed the temp file.
    fuzzer = make_fuzzer(calibrated, tmp_path)
    root = fuzzer.fresh_project(0)
    assert fuzzer.complete(root, "0.0")
    killed: list[str] = []
    fuzzer.kill_once(root, "0.1", killed, "--force", "seeds",
                     target="seeds:begin>record-write>fsync#1")
    assert killed == ["0.1"]
    temps = list((cs.artifacts(root) / "seeds").glob(".stage.json.tmp.*"))
    assert len(temps) == 1
    calls = len(cs.read_calls(root))

    assert fuzzer.complete(root, "0.2")
    assert cs.read_calls(root)[calls:] == []  # every stage up to date
    assert not temps[0].exists()
    assert cs.leftovers(root) == []
    assert_clean(fuzzer.figures)


def test_the_start_of_build_sweep_keeps_the_journal_of_a_running_record(calibrated, tmp_path):
    # The fix above must not remove the journal a running record names: the batches it lists
    # would be lost and made again.
    fuzzer = make_fuzzer(calibrated, tmp_path)
    # About to call batch 3: batches 0-2 journaled, not yet synced.
    root = _kill_then_build(fuzzer, "seeds:batch-code#4")
    seeds = cs.artifacts(root) / "seeds"
    (journal,) = seeds.glob("journal-*")
    stale = seeds / "journal-20000101T000000-deadbeef.jsonl"
    stale.write_text("")
    calls = len(cs.read_calls(root))

    assert fuzzer.complete(root, "0.1")
    assert not stale.exists() and not journal.exists()  # removed by the resumed attempt
    seeds_calls = [c[2] for c in cs.read_calls(root)[calls:] if c[1] == "seeds"]
    assert seeds_calls == [str(i) for i in range(3, 10)]  # batches 0-2 kept from the journal
    assert_clean(fuzzer.figures)
