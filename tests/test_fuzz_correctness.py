"""The correctness property of a build system (Build Systems à la Carte; see STYLE.md), fuzzed.

Random DAG-shaped workflows of deterministic stages go through random sequences of edits
(params, also type-only ones; spec keys; code constants and comments; helper modules the code
imports; callbacks, processors and export copies; run stages' folder outputs and commands that
write nothing; retries of flaky batches; file inputs; globs touching other stages' outputs;
deleted or rewritten batch files; `clean`) and builds (targets, `--force`, `--rerun-from`,
`--resume never`). After every `dd-build` we check that no stage in the build's closure is
stale (its output equals a from-scratch build's) and that no stage ran without a reason.
`tests/fuzz_workflows.py` holds the generator, `tests/fuzz_support.py` the model;
`benchmarks/fuzz_correctness.py` runs many more examples.
"""

from __future__ import annotations

import atexit
import os
import py_compile
import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import Project
from fuzz_support import ReferenceBuilds, run_seed
from fuzz_workflows import (
    FOCUS,
    TYPE_CLASSES,
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
        result = run_seed(seed, Path(tmp) / "proj", _references(), rounds=ROUNDS)
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
        result = run_seed(seed, Path(tmp) / "proj", _references(), rounds=ROUNDS, focus=focus)
    assert not result.violations, result.report()


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
                ("input touch", bool(s.cross_inputs))] if on)
    edges = {"plain": set(), "types": {"nested"}, "mutation": {"nested", "mutate"},
             "helpers": {"helpers"}, "callbacks": {"callback", "processors", "exports"},
             "retries": {"flaky"}, "folders": {"folder"},
             "globs": {"seed touch", "code touch", "input touch", "folder", "exports"},
             "mixed": {"nested", "mutate", "helpers", "callback", "processors", "exports",
                       "flaky", "folder", "input touch"}}[focus]
    assert edges <= set(seen), f"never generated: {edges - set(seen)}"
    if focus == "plain":
        assert set(seen) == {"typed"}, seen


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
