"""The correctness property of a build system (Build Systems à la Carte; see STYLE.md), fuzzed.

Random DAG-shaped workflows of deterministic stages go through random sequences of edits
(params, also type-only ones; spec keys; code constants and comments; helper modules the code
imports; callbacks, their versions, processors, allow_empty and export copies added, switched
and removed; run stages' folder outputs and commands that write nothing; retries of flaky
batches; where batches run: each generate stage's `concurrency` and `executor: thread|process`,
and, beside a Dask scheduler ($DD_BUILD_TEST_SCHEDULER, as CI has), a small share of the
builds on it (tests/test_c12dask_fuzz.py runs code edits with most builds there); file inputs; globs touching other stages' outputs; deleted or rewritten batch,
processed, callback and export files; `clean`; review overrides held through own and upstream
edits, released or lost) and builds (targets, `--force`, `--rerun-from`, `--resume never`).
After every `dd-build` we check that no stage in the build's closure is stale (its output
equals a from-scratch build's, with held reviews applied), that no stage ran without a
reason, and that the plan names the first step the step model expects.
`tests/fuzz_workflows.py` holds the generator, `tests/fuzz_support.py` and
`tests/fuzz_steps.py` the model; `benchmarks/fuzz_correctness.py` runs many more examples.
"""

from __future__ import annotations

import atexit
import json
import os
import py_compile
import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from c12dask_support import ADDRESS, HAVE_DASK
from conftest import Project
from fuzz_support import ReferenceBuilds, Sequence, local_serial, run_seed
from fuzz_workflows import (
    FOCUS,
    TYPE_CLASSES,
    WHERE_KEYS,
    StageGen,
    Typed,
    glob_match,
    random_workflow,
    touches,
    type_edit,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("DD_FUZZ_EXAMPLES", "8"))
ROUNDS = 5  # builds per example
# Beside a Dask scheduler, this share of the builds runs on it (each costs ~0.5-1 s more); a
# seed draws the same edits with or without one. Without one, every build is local.
SCHEDULER = ADDRESS if HAVE_DASK else None
DASK = float(os.environ.get("DD_FUZZ_DASK", "0.1"))

_REFERENCES: ReferenceBuilds | None = None


def _references() -> ReferenceBuilds:
    """One cache of from-scratch builds for the whole test run."""
    global _REFERENCES
    if _REFERENCES is None:
        folder = tempfile.mkdtemp(prefix="dd-fuzz-scratch-")
        atexit.register(shutil.rmtree, folder, True)
        _REFERENCES = ReferenceBuilds(Path(folder))
    return _REFERENCES


# Hypothesis picks the seeds (derandomized: the same ones on every run); each seed drives the
# seeded generator of fuzz_support, so a failing seed replays in the benchmark. Shrinking a
# seed means nothing, and each example is a few seconds of real builds: no shrink phase.
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          phases=(Phase.explicit, Phase.reuse, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_builds_are_never_stale_and_never_wasteful(seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="dd-fuzz-") as tmp:
        result = run_seed(seed, Path(tmp) / "proj", _references(), rounds=ROUNDS,
                          scheduler=SCHEDULER, dask=DASK)
    assert not result.violations, result.report()


# Two examples of each hard-edge class of issue 7 alone (fuzz_workflows.FOCUS), at seeds whose
# example found a bug of that class on main before the fixes (`python benchmarks/
# fuzz_correctness.py --examples 1 --focus F --seed S` replays one):
#   types 302, 304      a type-only edit (nest {a: true} -> {a: 1}; {a: false} -> {a: -0.0})
#                       left the stage up to date
#   globs 300, 301      globs over other stages' outputs (`reports/*.txt` added mid-sequence;
#                       `reports/*/part-*.txt` from the start): read, or digested, before the
#                       producer wrote them, so a from-scratch build is no fixpoint
#   folders 301, 305    params.n 4 -> 3 left part-3 in a run stage's output folder; a command
#                       that wrote nothing "succeeded" on the old folder
#   callbacks 302, 306  removing on_success, or switching it to a callback in another file,
#                       regenerated every batch
#   retries 300, 301    a retried batch saw an advanced ctx.rng
#   helpers 300, 303    an edit of helpers/base.py (imported through helpers.text) or of
#                       helpers/lazy.py (imported inside the function) left the stage up to date
#   mutation 300, 304   a regenerated batch saw other batches' mutations of nested params
HARD_EDGES = [
    ("types", 302), ("types", 304),
    ("globs", 300), ("globs", 301),
    ("folders", 301), ("folders", 305),
    ("callbacks", 302), ("callbacks", 306),
    ("retries", 300), ("retries", 301),
    ("helpers", 300), ("helpers", 303),
    ("mutation", 300), ("mutation", 304),
]


@pytest.mark.parametrize(("focus", "seed"), HARD_EDGES, ids=[f"{f}-{s}" for f, s in HARD_EDGES])
def test_hard_edges_are_never_stale_and_never_wasteful(focus: str, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="dd-fuzz-") as tmp:
        result = run_seed(seed, Path(tmp) / "proj", _references(), rounds=ROUNDS, focus=focus,
                          scheduler=SCHEDULER, dask=DASK)
    assert not result.violations, result.report()


# The step model (issue 8): two examples of step-level edits and two of held overrides, at
# seeds whose example found a bug before the fixes (tests/test_steps_fuzz_found.py has each
# as a small test; replay with `--focus steps|overrides`):
#   steps 100       an empty output's failure named no step it stopped in: setting
#                   allow_empty regenerated batches (and reran callbacks, called transforms)
#   steps 113       once it did, a later-step run that failed left the previous record in
#                   force: a switched callback ran on every build; and a processed file
#                   deleted after the failure was used as if it were there
#   overrides 12    a code edit of a held stage was forgotten (the held build took the new
#                   digest into the record): after `override --release` it stayed stale
#   overrides 105   held stages, re-overrides and releases; a generate stage whose only batch
#                   was damaged runs fresh, so its callback runs again (the model allows it)
STEP_EDGES = [("steps", 100), ("steps", 113), ("overrides", 12), ("overrides", 105)]


@pytest.mark.parametrize(("focus", "seed"), STEP_EDGES, ids=[f"{f}-{s}" for f, s in STEP_EDGES])
def test_steps_and_held_overrides_are_never_stale_and_never_wasteful(focus: str, seed: int
                                                                      ) -> None:
    with tempfile.TemporaryDirectory(prefix="dd-fuzz-") as tmp:
        result = run_seed(seed, Path(tmp) / "proj", _references(), rounds=ROUNDS, focus=focus,
                          scheduler=SCHEDULER, dask=DASK)
    assert not result.violations, result.report()
    assert result.seen, result.report()


# Issue 11's growth: num_records grown and shrunk (`--focus growth`), checked against a
# from-scratch build (never stale) and by the waste check of growth (only new batches, a last
# batch whose size changed and damaged ones may run).
GROWTH_EDGES = [("growth", 1), ("growth", 2)]


@pytest.mark.parametrize(("focus", "seed"), GROWTH_EDGES,
                         ids=[f"{f}-{s}" for f, s in GROWTH_EDGES])
def test_growth_is_never_stale_and_never_wasteful(focus: str, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="dd-fuzz-") as tmp:
        result = run_seed(seed, Path(tmp) / "proj", _references(), rounds=ROUNDS, focus=focus,
                          scheduler=SCHEDULER, dask=DASK)
    assert not result.violations, result.report()
    assert result.seen["edit grow"] and result.seen["growths"], result.report()


# ----------------------------------------------------------------------------- the generator


def test_glob_match_is_segment_wise_like_glob():
    assert glob_match("reports/*.txt", "reports/s2.txt")
    assert glob_match("reports/*/part-*.txt", "reports/s3/part-0.txt")
    assert not glob_match("reports/*.txt", "reports/s3/part-0.txt")  # `*` stops at `/`
    assert not glob_match("exports/s1*.csv", "exports/s2.csv")


def test_touches_sees_outputs_files_in_output_folders_and_export_copies():
    run = StageGen("s2", "run", 1, "c", folder=True)
    table = StageGen("s1", "generate", 1, "c", exports=["exports/s1.jsonl"])
    assert touches("reports/*/part-*.txt", run) and touches("reports/s2/part-0.txt", run)
    assert not touches("reports/*.txt", run) and not touches("reports/s2-notes/part-0.txt", run)
    assert touches("exports/*.jsonl", table) and touches("exports/s1.jsonl", table)
    assert not touches("exports/*.csv", table)


def test_type_edits_are_mostly_type_only_between_values_python_finds_equal():
    rng = random.Random(0)
    old = Typed(0, 0, "map")  # {"a": 1}
    edits = [type_edit(rng, old) for _ in range(200)]
    equal = [e for e in edits if e.value == old.value and repr(e.value) != repr(old.value)]
    assert len(equal) > 100  # 1 -> 1.0 / true, the values a `==` comparison misses
    assert {repr(e.value) for e in equal} == {"{'a': 1.0}", "{'a': True}"}
    assert all(e != old for e in edits)
    assert TYPE_CLASSES[1][2] == 0 and repr(TYPE_CLASSES[1][2]) == "-0.0"


@pytest.mark.parametrize("focus", sorted(FOCUS))
def test_generated_workflows_have_their_hard_edges_and_no_cycle(focus: str) -> None:
    seen: Counter[str] = Counter()
    grown: Counter[str] = Counter()
    for seed in range(60):
        wf = random_workflow(random.Random(seed), FOCUS[focus])
        assert wf.cross_consistent(), f"seed {seed}: a touch reads a later stage's outputs"
        for s in wf.stages:
            for pattern in s.cross:
                assert wf.producers(s), f"seed {seed}: {pattern} touches no output"
                if "*" in pattern:  # a glob also matches a source, so it matches at load
                    assert any(glob_match(pattern, rel) for rel in wf.data), pattern
            seen.update(name for name, on in [
                ("typed", True), ("nested", s.x is not None), ("mutate", s.mutate),
                ("helpers", bool(s.helpers)), ("callback", bool(s.on_success)),
                ("processors", bool(s.processors)), ("exports", bool(s.exports)),
                ("flaky", s.flaky and s.retries > 0), ("folder", s.folder),
                ("seed touch", bool(s.seed_file)), ("code touch", bool(s.cross_code)),
                ("input touch", bool(s.cross_inputs)),
                ("callback version", bool(s.on_success_version)),
                ("allow_empty", s.allow_empty), ("may be empty", s.may_be_empty()),
                ("two exports", len(s.exports) > 1), ("rows say the name", s.named)] if on)
            grown.update(name for name, on in [  # what growth edits act on (issue 11)
                ("seeded by a stage", bool(s.seed)),
                ("num_records", s.kind == "generate" and s.num_records is not None)] if on)
    steps = {"callback", "processors", "exports", "callback version", "allow_empty",
             "may be empty", "two exports"}
    edges = {"plain": set(), "types": {"nested"}, "mutation": {"nested", "mutate"},
             "helpers": {"helpers"}, "callbacks": {"callback", "processors", "exports"},
             "retries": {"flaky"}, "folders": {"folder"},
             "globs": {"seed touch", "code touch", "input touch", "folder", "exports"},
             "steps": steps, "overrides": steps,
             "reverts": {"callback", "processors", "exports", "callback version",
                         "rows say the name"},
             "growth": set(),
             "mixed": {"nested", "mutate", "helpers", "callback", "processors", "exports",
                       "flaky", "folder", "input touch", "allow_empty", "may be empty"}}[focus]
    assert edges <= set(seen), f"never generated: {edges - set(seen)}"
    assert {"seeded by a stage", "num_records"} <= set(grown), grown
    if focus == "plain":
        assert set(seen) == {"typed"}, seen
    if focus not in ("steps", "overrides", "mixed", "reverts"):  # issue 7's draw as before
        assert not set(seen) & (steps - {"callback", "processors", "exports"}), seen


def test_the_step_edits_add_switch_and_remove_every_later_step(tmp_path: Path) -> None:
    """Each later step's keys get added, switched and removed by the steps focus's edits."""
    changes: Counter[str] = Counter()
    for seed in range(25):
        seq = Sequence(random.Random(seed), tmp_path / f"p{seed}", _references(),
                       mix=FOCUS["steps"])
        (tmp_path / f"p{seed}").mkdir()
        seq.wf.write_all(seq.root)
        for kind in ("processors", "callback", "callback_version", "allow_empty", "exports"):
            for _ in range(6):
                before = {s.name: s.step_parts() for s in seq.wf.stages}
                if not getattr(seq, "_edit_" + kind)():
                    continue
                for s in seq.wf.stages:
                    for step, part in s.step_parts().items():
                        old = before[s.name][step]
                        if part != old:
                            how = "added" if old == "{}" else "removed" if part == "{}" \
                                else "switched"
                            changes[f"{step} {how}"] += 1
    for step in ("processors", "on_success", "allow_empty", "outputs"):
        for how in ("added", "switched", "removed"):
            if (step, how) != ("allow_empty", "switched"):  # a bool: set or unset
                assert changes[f"{step} {how}"], f"{step} never {how}: {changes}"


def test_where_batches_run_is_drawn_apart_from_the_edits(tmp_path: Path) -> None:
    """Each generate stage's concurrency and executor, and which builds go to the Dask
    scheduler, come from a generator of their own: the edits and builds a seed draws are the
    same with or without a scheduler, and as before these draws. The oracle's Workflowfile
    is the same without them (a local serial build)."""
    seen: Counter[str] = Counter()
    for seed in range(40):
        seqs = [Sequence(random.Random(seed), tmp_path / f"p{seed}", _references(),
                         scheduler=scheduler, dask=0.3)
                for scheduler in (None, "tcp://127.0.0.1:1")]
        plain = random.Random(seed)
        wf = random_workflow(plain, FOCUS["mixed"])
        for seq in seqs:
            assert seq.rng.getstate() == plain.getstate()  # the main generator untouched
            assert seq.wf.workflowfile_text(where=False) == wf.workflowfile_text()
            assert local_serial(seq.wf.workflowfile_text()) == wf.workflowfile_text()
        # Only the one with a scheduler goes there, but both draw the same where-edits.
        on = [[seq.on_dask() for _ in range(20)] for seq in seqs]
        assert not any(on[0]) and seqs[0].where.getstate() == seqs[1].where.getstate()
        seen["dask builds"] += sum(on[1])
        for s in seqs[0].wf.stages:
            if s.kind == "generate":
                seen[f"executor {s.executor}"] += 1
                seen["concurrent" if s.concurrency > 1 else "serial"] += 1
                assert not set(WHERE_KEYS) & set(json.loads(s.step_parts()["main"]))
    assert 0.2 < seen["dask builds"] / 800 < 0.4, seen
    assert {"executor None", "executor thread", "executor process", "concurrent",
            "serial"} <= set(seen), seen


# ----------------------------------------------------------------------------- regressions

_MAKE = "def make(ctx):\n    return [{'k': 3}] * ctx.size\n"
_USES_HELPER = "from stages.helper import K\n\n\ndef make(ctx):\n    return [{'k': K}] * ctx.size\n"


@pytest.mark.parametrize(("callable_ref", "extra", "edited"), [
    ("stages/k.py:make", "", "stages/k.py"),  # a file callable
    ("stages.k:make", "", "stages/k.py"),  # a module callable
    ("stages/k.py:make", "code: [stages/helper.py]", "stages/helper.py"),  # a helper it imports
], ids=["file", "module", "helper"])
def test_code_edit_in_the_same_second_runs_the_new_code(
        project: Project, callable_ref: str, extra: str, edited: str) -> None:
    """Found by the fuzzer: stage code was loaded through Python's bytecode cache, which trusts
    a `__pycache__` entry while the source's mtime in whole seconds and its size match. An edit
    that kept the size within the same second made dd-build see the new code digest, run the
    stage, and record the old code's output as up to date."""
    if edited == "stages/k.py":
        project.write("stages/k.py", _MAKE)
    else:
        project.write("stages/k.py", _USES_HELPER)
        project.write("stages/helper.py", "K = 3\n")
    project.write("Workflowfile", f"""
        workflow: demo
        stages:
          a:
            generate: {callable_ref}
            num_records: 2
            batch_size: 2
            {extra}
        """)
    code = project.root / edited
    py_compile.compile(str(code))  # cached bytecode of the old source, as any import leaves
    assert project.run("-q", PYTHONDONTWRITEBYTECODE="").code == 0
    before = code.stat().st_mtime_ns
    code.write_text(code.read_text().replace("3", "4"))  # the same size
    same_second = before - before % 10**9 + (before + 1) % 10**9  # another ns, same second
    os.utime(code, ns=(same_second, same_second))

    result = project.run("--json", PYTHONDONTWRITEBYTECODE="")

    assert result.code == 0, result.stderr
    assert [r["code"] for r in result.stage("a")["reasons"]] == ["code_changed"]
    assert project.table("a").column("k").to_pylist() == [4, 4]
