"""Issue 7 §2: what each call of stage code is handed, and what a failed call leaves behind.

- A failed transform is called again: an empty result (or any failure) is not kept and reused
  for ever; a completed transform with a boundary-only change still keeps its batch.
- A retried batch gets a fresh `ctx.rng` (and params), so it gives the rows an untroubled run
  gives.
- `params` are a deep copy per call: a batch that mutates a nested value changes no other
  batch, attempt, transform or callback.
Driven through the real CLI.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import Project, reason_codes

CODE = '''
import os
from pathlib import Path

import pyarrow as pa

HERE = Path(__file__).parent


def _log(line):
    with open(HERE / "calls.log", "a") as fh:
        fh.write(line + "\\n")


def maybe_empty(ctx):
    """Transform: no rows while code/empty exists (a file no stage declares)."""
    _log(f"{ctx.stage_name} all")
    (table,) = [t for t in ctx.inputs.values() if isinstance(t, pa.Table)]
    return table.slice(0, 0) if (HERE / "empty").exists() else table


def flaky(ctx):
    """Draws from ctx.rng and mutates its params, then raises on the first attempt of each
    batch when FLAKY is set (a marker file per batch counts the attempts)."""
    _log(f"{ctx.stage_name} {ctx.batch_index}")
    values = [ctx.rng.random() for _ in range(ctx.size)]
    ctx.params["xs"].append("attempt")
    marker = HERE / f"attempted-{ctx.batch_index}"
    if os.environ.get("FLAKY") and not marker.exists():
        marker.write_text("x")
        raise RuntimeError("transient failure")
    return {"id": list(range(ctx.offset, ctx.offset + ctx.size)), "value": values,
            "xs": [len(ctx.params["xs"])] * ctx.size}


def mutate(ctx):
    """Appends to the nested params on every call; records what it saw."""
    seen = list(ctx.params["xs"])
    ctx.params["xs"].append(ctx.batch_index)
    ctx.params["nested"]["n"] += 1
    return [{"batch": ctx.batch_index, "seen": seen, "n": ctx.params["nested"]["n"]}]


def mutate_all(ctx):
    """Transform twin of `mutate`."""
    seen = list(ctx.params["xs"])
    ctx.params["xs"].append("t")
    return [{"seen": seen}]


def check_params(ctx):
    """on_success: fails the stage unless it sees the params as written."""
    if ctx.params != {"xs": [1, 2], "nested": {"n": 0}}:
        raise ValueError(f"params were changed: {ctx.params}")
    ctx.params["xs"].append("callback")
    return None
'''

TRANSFORM = """
workflow: demo
stages:
  a:
    generate: code/stages.py:rows
    num_records: 4
    batch_size: 2
  t:
    transform: code/calls.py:maybe_empty
    inputs: [a]
"""


def _project(project: Project, workflow: str) -> Project:
    project.write("code/calls.py", CODE)
    project.write("Workflowfile", workflow)
    return project


def test_a_transform_that_returned_no_rows_resumes_at_the_empty_check(project: Project) -> None:
    """The step model (issue 8): the failure was in the allow_empty check, so a rebuild with
    nothing changed runs from there and keeps the call; `--force` calls it again."""
    p = _project(project, TRANSFORM)
    (p.root / "code/empty").write_text("x")
    r = p.run("--json")
    assert r.code == 1
    assert r.stage("t")["result"] == "failed" and "no rows" in r.stage("t")["error"]
    (p.root / "code/empty").unlink()  # what made it empty is gone; nothing the tool sees moved
    p.clear_calls()
    r = p.run("--json")
    assert r.code == 1 and r.stage("t")["step"] == "allow_empty"
    assert "failed_before" in reason_codes(r.stage("t")) and p.calls() == []
    r = p.run("--json", "--force", "t")
    assert r.code == 0, r.stderr
    t = r.stage("t")
    assert t["result"] == "completed" and t["rows"] == 4
    assert p.calls() == ["t all"]


def test_a_transform_whose_processors_failed_is_not_called_again(project: Project) -> None:
    p = _project(project, TRANSFORM.replace(
        "    inputs: [a]\n", "    inputs: [a]\n    processors: [{filter: \"id > 100\"}]\n"))
    r = p.run("--json")
    assert r.code == 1 and r.stage("t")["result"] == "failed"
    p.clear_calls()
    p.write("Workflowfile", (p.root / "Workflowfile").read_text().replace("id > 100", "id >= 0"))
    r = p.run("--json")
    assert r.code == 0 and r.stage("t")["step"] == "processors"
    assert p.calls() == []


def test_a_completed_transform_keeps_its_batch_for_a_boundary_change(project: Project) -> None:
    p = _project(project, TRANSFORM)
    assert p.run().code == 0
    p.clear_calls()
    p.write("Workflowfile", TRANSFORM.replace(
        "    inputs: [a]\n", "    inputs: [a]\n    processors: [{limit: 1}]\n"))
    r = p.run("--json")
    assert r.code == 0, r.stderr
    t = r.stage("t")
    assert t["action"] == "resume" and t["batches_run"] == 0 and t["rows"] == 1
    assert p.calls() == []


RETRIES = """
workflow: demo
stages:
  g:
    generate: code/calls.py:flaky
    num_records: 6
    batch_size: 2
    retries: 2
    params: {xs: [0]}
"""


def test_a_retried_batch_gives_the_rows_of_an_untroubled_run(project: Project,
                                                             tmp_path: Path) -> None:
    calm = Project(tmp_path / "calm")
    shutil.copytree(project.root, calm.root)
    _project(calm, RETRIES)
    p = _project(project, RETRIES)
    assert calm.run(DD_BUILD_RETRY_BASE_S="0").code == 0
    r = p.run("--json", FLAKY="1", DD_BUILD_RETRY_BASE_S="0")
    assert r.code == 0, r.stderr
    assert p.calls() == ["g 0", "g 0", "g 1", "g 1", "g 2", "g 2"]  # every batch retried once
    troubled, untroubled = p.table("g"), calm.table("g")
    assert troubled.equals(untroubled)
    assert troubled.column("xs").to_pylist() == [2] * 6  # each attempt: the params as written


MUTATING = """
workflow: demo
stages:
  g:
    generate: code/calls.py:mutate
    num_records: 3
    batch_size: 1
    params: {xs: [1, 2], nested: {n: 0}}
    on_success: code/calls.py:check_params
  t:
    transform: code/calls.py:mutate_all
    inputs: [g]
    params: {xs: [1, 2], nested: {n: 0}}
    on_success: code/calls.py:check_params
"""


def test_every_call_sees_the_params_as_written(project: Project) -> None:
    p = _project(project, MUTATING)
    r = p.run("--json")
    assert r.code == 0, r.stderr
    assert p.table("g").to_pylist() == [{"batch": i, "seen": [1, 2], "n": 1} for i in range(3)]
    assert p.table("t").to_pylist() == [{"seen": [1, 2]}]
    # nothing a call mutated leaked into what the tool records or fingerprints
    assert p.record("g")["spec"]["params"] == {"xs": [1, 2], "nested": {"n": 0}}
    assert p.run("--json").stage("g")["action"] == "up_to_date"
