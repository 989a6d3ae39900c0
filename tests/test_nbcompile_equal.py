"""A generated test: with the compiled workflow, every command says and builds exactly what it
says and builds without it, over the correctness fuzzer's varied workflows (tests/
fuzz_workflows.py: generate, transform and run stages, seeds, file and glob inputs, helpers,
callbacks, processors, export copies, typed params, cross touches refused at load).

In one project, each read-only command (plans, --explain, status, dag, targets, --force,
--rerun-from, a misspelt target) runs from the cache and then with none: same exit code,
stdout and stderr. Twin projects then get the same edits (a param in the Workflowfile, a
stage's code, a data file) and build, one from the cache and one without: same reports and
the same outputs.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, Result
from fuzz_workflows import FOCUS, WorkflowGen, random_workflow
from test_nbcompile_cache import COMPILED, run

MIXES = ("plain", "types", "globs", "folders", "callbacks", "helpers", "steps", "mixed")


def _cold(project: Project, *args: str) -> Result:
    shutil.rmtree(project.root / COMPILED, ignore_errors=True)
    result, hit = run(project, *args)
    assert not hit
    return result


def _stored(project: Project) -> bool:
    """Store the compiled workflow (a status stores it); False when the Workflowfile is
    refused (nothing is stored for it)."""
    result, _ = run(project, "status")
    return result.code == 0 and any((project.root / COMPILED).glob("*.bin"))


def _read_only_commands(wf: WorkflowGen, rng: random.Random) -> list[tuple[str, ...]]:
    names = wf.names
    some = rng.choice(names)
    return [("-n", "--json", "--explain"), ("-n", "--explain"), ("status", "--json"),
            ("status",), ("dag", "--json"), ("dag", "--format", "dot"),
            ("-n", "--json", some), ("-n", "--json", "--rerun-from", rng.choice(names)),
            ("-n", "--json", "--force", some), ("-n", "--json", "--resume", "always"),
            ("-n", some + "x")]


def _outputs(project: Project) -> dict[str, Any]:
    """Each stage's record as built (status, rows, output digest), and every file the stages
    wrote outside the artifacts."""
    found: dict[str, Any] = {}
    for record in sorted((project.root / "artifacts").glob("*/*/stage.json")):
        data = json.loads(record.read_text())
        output = data.get("output") or {}
        found[record.parent.name] = (data.get("status"), output.get("rows"),
                                     output.get("digest"))
    for folder in ("reports", "exports"):
        for path in sorted((project.root / folder).rglob("*")):
            if path.is_file() and "-note" not in path.name:
                found[path.relative_to(project.root).as_posix()] = path.read_bytes()
    return found


def _built(hot: Project, cold: Project, *args: str) -> bool:
    """Build both twins (hot from its cache when it has one); they report and build alike.
    Whether hot's build read the cache."""
    from_cache, hit = run(hot, "--json", *args)
    without = _cold(cold, "--json", *args)
    assert from_cache.code == without.code, (from_cache.stderr, without.stderr)
    assert from_cache.stdout == without.stdout
    assert _outputs(hot) == _outputs(cold)
    if from_cache.code != 2:
        _stored(hot)
    return hit


@pytest.mark.parametrize("seed", range(len(MIXES)))
def test_commands_and_builds_are_the_same_with_and_without_the_cache(
        tmp_path: Path, seed: int) -> None:
    rng = random.Random(14_000 + seed)
    wf = random_workflow(rng, FOCUS[MIXES[seed]])
    hot, cold = Project(tmp_path / "hot"), Project(tmp_path / "cold")
    for project in (hot, cold):
        wf.write_all(project.root)
    _built(hot, cold)
    valid = _stored(hot)
    if valid:
        for args in _read_only_commands(wf, rng):
            from_cache, hit = run(hot, *args)
            assert hit, (args, from_cache.stderr)
            assert _cold(hot, *args) == from_cache, args
            assert _stored(hot)
        assert run(hot, "-q")[1]
    # the same edits to both twins, then a build of each
    stage = rng.choice(wf.stages)
    if stage.kind == "run":
        stage.k += 1
    else:
        stage.p += 1
    for project in (hot, cold):
        wf.write_workflowfile(project.root)
    hits = [_built(hot, cold)]
    stage = rng.choice(wf.stages)
    stage.const += 1
    rel = rng.choice(sorted(wf.data))
    wf.data[rel] += "edited\n"
    for project in (hot, cold):
        wf.write_code(project.root, stage)
        wf.write_data(project.root, rel)
    hits.append(_built(hot, cold))
    hits.append(_built(hot, cold, "--force", rng.choice(wf.names)))
    assert not valid or hits[-1]  # nothing changed since the last build: a hit
