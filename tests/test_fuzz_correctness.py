"""The correctness property of a build system (Build Systems à la Carte; see STYLE.md), fuzzed.

Random DAG-shaped workflows of deterministic stages go through random sequences of edits
(params, spec keys, code constants and comments, file inputs, deleted or rewritten batch
files, `clean`) and builds (targets, `--force`, `--rerun-from`, `--resume never`). After every
`dd-build` we check that no stage in the build's closure is stale (its output equals a
from-scratch build's) and that no stage ran without a reason. `tests/fuzz_support.py` holds the
generator and the model; `benchmarks/fuzz_correctness.py` runs many more examples.
"""

from __future__ import annotations

import atexit
import os
import py_compile
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import Project
from fuzz_support import ReferenceBuilds, run_seed
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("DD_FUZZ_EXAMPLES", "12"))
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
