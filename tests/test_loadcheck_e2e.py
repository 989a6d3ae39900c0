"""Validation at load (issue 9), through the real CLI: what used to fail only when a stage ran
is refused when the Workflowfile is read (exit 2, before anything runs, nothing written), and
every mistake is reported at once, each with its place.

- a function missing from its code file, an async function, a plain value named as one;
- `{inputs[N]}` past every path a stage input can give;
- a `seed:` naming a run stage whose first output is no table;
- several mistakes in one report (text: one block each; --json: `error.errors`), at most 20
  shown and "and N more"; a file that is not YAML, or not a mapping, stays one error;
- a misspelt key is one error, not a cascade of what it leaves missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import CHAIN, STAGE_CODE, Project, Result

ART = "artifacts"


def refused(project: Project, *args: str) -> Result:
    """A load error: exit 2, no traceback, nothing ran and nothing was written."""
    result = project.run(*args)
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert not (project.root / ART).exists(), "the refused build wrote artifacts"
    assert project.calls() == []
    return result


def error_doc(project: Project) -> dict[str, Any]:
    result = refused(project, "--json")
    doc = result.json()
    assert doc["ok"] is False and doc["error"]["exit_code"] == 2
    error: dict[str, Any] = doc["error"]
    return error


def where(error: dict[str, Any]) -> tuple[Any, ...]:
    return error.get("line"), error.get("stage"), error.get("key")


# CHAIN's lines: 2 workflow, 3 stages, 4 a:, 5 generate, 6 num_records, 7 batch_size, 8 params,
# 9 b:, 10 generate, 11 seed, 12 num_records, 13 batch_size, 14 c:, 15 transform, 16 inputs.


# ---------------------------------------------------------------- functions in code files


def test_a_missing_function_is_refused_at_load_with_a_did_you_mean(project: Project) -> None:
    project.write("Workflowfile", CHAIN.replace("code/stages.py:join", "code/stages.py:jion"))
    error = error_doc(project)
    assert where(error) == (15, "c", "transform")
    assert "defines no function `jion`" in error["message"]
    assert error["hint"] == "did you mean `join`?"


def test_a_missing_callback_function_is_refused_at_load(project: Project) -> None:
    project.write("Workflowfile", CHAIN + "    on_success: code/stages.py:keep_good\n")
    error = error_doc(project)
    assert where(error) == (17, "c", "on_success")
    assert "defines no function `keep_good`" in error["message"]
    assert "functions defined there: rows, join" in error["hint"]  # no close name: the list


@pytest.mark.parametrize(("code", "message"), [
    ("async def rows(ctx):\n    return []\n", "is an async function"),
    ("rows = 'not yet'\n", "is a string, not a function"),
    ("rows = [1, 2]\n", "is a list, not a function"),
    ("rows = None\n", "is None, not a function"),
])
def test_an_async_function_or_a_value_is_refused_at_load(project: Project, code: str,
                                                         message: str) -> None:
    project.write("code/other.py", code)
    project.write("Workflowfile", CHAIN.replace("generate: code/stages.py:rows\n    num_records: 20",
                                                "generate: code/other.py:rows\n    num_records: 20"))
    error = error_doc(project)
    assert where(error) == (5, "a", "generate")
    assert message in error["message"]


def test_an_async_callback_is_refused_saying_it_returns_no_path(project: Project) -> None:
    project.write("code/cb.py", "async def keep(ctx):\n    return None\n")
    project.write("Workflowfile", CHAIN + "    on_success: code/cb.py:keep\n")
    error = error_doc(project)
    assert where(error) == (17, "c", "on_success")
    assert "async function" in error["message"] and "not a path" in error["message"]


def test_a_module_reference_into_the_project_is_checked_too(project: Project) -> None:
    project.write("pipeline/__init__.py", "")
    project.write("pipeline/steps.py", STAGE_CODE)
    project.write("Workflowfile", CHAIN.replace("code/stages.py:join", "pipeline.steps:jion"))
    error = error_doc(project)
    assert where(error) == (15, "c", "transform")
    assert "`pipeline.steps` (pipeline/steps.py) defines no function `jion`" in error["message"]
    project.write("Workflowfile", CHAIN.replace("code/stages.py:join", "pipeline.steps:join"))
    assert project.run().code == 0


@pytest.mark.parametrize("code", [
    "globals()['join'] = lambda ctx: None\n",  # what only running it tells
    "from os.path import *\n",
    "def __getattr__(name):\n    raise AttributeError(name)\n",
])
def test_a_file_that_may_bind_names_dynamically_is_left_to_the_build(
        project: Project, code: str) -> None:
    project.write("code/dyn.py", code + "def rows(ctx):\n    return []\n")
    project.write("Workflowfile", CHAIN.replace("code/stages.py:join", "code/dyn.py:jion"))
    assert project.run("dag").code == 0  # the Workflowfile loads
    result = project.run()
    assert result.code == 1 and "no function 'jion'" in result.stderr


def test_a_module_outside_the_project_is_left_to_the_build(project: Project) -> None:
    project.write("Workflowfile", CHAIN.replace("code/stages.py:join", "os.path:no_such_fn"))
    assert project.run("dag").code == 0
    result = project.run()
    assert result.code == 1 and "no function 'no_such_fn'" in result.stderr


def test_a_file_that_does_not_parse_is_left_to_the_build(project: Project) -> None:
    project.write("code/broken.py", "def join(ctx:\n")
    project.write("Workflowfile", CHAIN.replace("code/stages.py:join", "code/broken.py:join"))
    assert project.run("dag").code == 0
    result = project.run()
    assert result.code == 1 and "cannot load code/broken.py" in result.stderr


def test_every_binding_python_allows_builds(project: Project) -> None:
    """The check never refuses what runs: each way of binding the name, through the build."""
    project.write("pkg/__init__.py", "")
    project.write("pkg/impl.py", STAGE_CODE)
    project.write("code/forms.py", """\
        import os
        from pkg.impl import rows as imported
        from pkg.impl import join as _join

        assigned = _join
        if os.environ.get("NEVER_SET"):
            def conditional(ctx):
                raise AssertionError
        else:
            conditional = _join
        try:
            from pkg.impl import join as guarded
        except ImportError:
            guarded = None
        (walrus := _join)
        for looped in [_join]:
            pass
        class Klass:
            def __new__(cls, ctx):
                return _join(ctx)

        def _setup():
            global via_global
            via_global = _join

        _setup()
    """)
    names = ["imported", "assigned", "conditional", "guarded", "walrus", "looped", "Klass",
             "via_global"]
    stages = "".join(
        f"  t{i}:\n    transform: code/forms.py:{name}\n    inputs: [a]\n" if name != "imported"
        else f"  t{i}:\n    generate: code/forms.py:{name}\n    num_records: 2\n"
        for i, name in enumerate(names))
    project.write("Workflowfile", CHAIN + stages)
    result = project.run("--json")
    assert result.code == 0, result.stderr
    assert {s["result"] for s in result.json()["stages"]} == {"completed"}


# ---------------------------------------------------------------- {inputs[N]}


RUN_ON = """\
  r:
    run: cat {cmd} > out.txt
    inputs: [{inputs}]
    outputs: [out.txt]
"""


@pytest.mark.parametrize(("inputs", "cmd", "most"), [
    ("a", "{inputs[1]}", 1),  # a generate stage: its batches folder
    ("c, a", "{inputs[0]}/x {inputs[2]}", 2),
    ("q", "{inputs[2]}", 2),  # a run stage: its declared outputs
])
def test_an_index_past_every_path_of_the_stage_inputs_is_refused(
        project: Project, inputs: str, cmd: str, most: int) -> None:
    producer = "  q:\n    run: touch q1 q2\n    outputs: [q1, q2]\n"
    project.write("Workflowfile", CHAIN + producer + RUN_ON.format(cmd=cmd, inputs=inputs))
    error = error_doc(project)
    assert where(error) == (21, "r", "run")
    assert f"at most {most} input" in error["message"]


def test_an_index_within_the_stage_inputs_builds(project: Project) -> None:
    producer = "  q:\n    run: printf 'x' > q1; printf 'y' > q2\n    outputs: [q1, q2]\n"
    project.write("Workflowfile", CHAIN + producer + RUN_ON.format(cmd="{inputs[1]}", inputs="q"))
    result = project.run()
    assert result.code == 0, result.stderr
    assert (project.root / "out.txt").read_text() == "y"


def test_an_index_past_a_glob_or_a_callback_output_is_checked_when_the_stage_runs(
        project: Project) -> None:
    """A glob matches what is there when the stage runs, and a callback may return a folder of
    files: the index cannot be judged before; the stage fails, naming it."""
    project.write("data/one.txt", "1")
    project.write("Workflowfile", CHAIN + RUN_ON.format(cmd="{inputs[3]}", inputs="'data/*.txt'"))
    assert project.run("dag").code == 0
    result = project.run()
    assert result.code == 1 and "{inputs[3]}" in result.stderr and "✗ r: failed" in result.stderr
    project.write("code/cb.py", "def keep(ctx):\n    return None\n")
    project.write("Workflowfile", CHAIN + "    on_success: code/cb.py:keep\n"
                  + RUN_ON.format(cmd="{inputs[3]}", inputs="c"))
    assert project.run("dag").code == 0


# ---------------------------------------------------------------- seeds read as tables


SEEDED = """\
  q:
    run: {cmd}
    outputs: [{outputs}]
  s:
    generate: code/stages.py:rows
    seed: q
"""


def test_a_seed_naming_a_run_stage_whose_first_output_is_no_table_is_refused(
        project: Project) -> None:
    project.write("Workflowfile", CHAIN + SEEDED.format(cmd="echo x > report.md",
                                                        outputs="report.md, rows.csv"))
    error = error_doc(project)
    assert where(error) == (22, "s", "seed")
    assert "seed stage `q` has no table to read" in error["message"]
    assert "`report.md`" in error["message"] and "under `inputs`" in error["hint"]


@pytest.mark.parametrize(("cmd", "outputs"), [
    ("printf 'id\\n1\\n2\\n' > rows.csv; echo x > report.md", "rows.csv, report.md"),
    ("mkdir -p t.v1 && cp ../seed.parquet t.v1/", "t.v1/"),  # written as a folder
    ("mkdir -p tables && cp ../seed.parquet tables/", "tables"),  # no extension
])
def test_a_seed_naming_a_run_stage_with_a_table_builds(project: Project, cmd: str,
                                                       outputs: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1, 2]}), project.root.parent / "seed.parquet")
    project.write("Workflowfile", CHAIN + SEEDED.format(cmd=cmd, outputs=outputs))
    result = project.run("s")
    assert result.code == 0, result.stderr


def test_a_transform_input_naming_a_run_stage_without_a_table_gets_its_path(
        project: Project) -> None:
    project.write("code/t.py", "def paths(ctx):\n"
                               "    return [{'p': str(ctx.inputs['q'])}]\n")
    project.write("Workflowfile", CHAIN + "  q:\n    run: echo x > report.md\n"
                  "    outputs: [report.md]\n  t:\n    transform: code/t.py:paths\n"
                  "    inputs: [q]\n")
    result = project.run("t")
    assert result.code == 0, result.stderr


# ---------------------------------------------------------------- many errors at once


MANY = """\
workflow: demo
stages:
  a:
    generate: code/stages.py:rowz
    num_records: 0
  b:
    generate: code/stages.py:rows
    seed: a
    batch_size: -1
  c:
    transform: code/stages.py:join
    inputs: [a, nope.txt]
    sampling: shuffle
"""


def test_every_mistake_is_reported_at_once_each_with_its_place(project: Project) -> None:
    project.write("Workflowfile", MANY)
    result = refused(project)
    blocks = [line for line in result.stderr.splitlines() if line.startswith("Workflowfile:")]
    assert blocks == [
        "Workflowfile:4:15, stage 'a', key 'generate': `code/stages.py` defines no function "
        "`rowz`",
        "Workflowfile:5:18, stage 'a', key 'num_records': `num_records` must be a positive "
        "integer, got 0",
        "Workflowfile:9:17, stage 'b', key 'batch_size': `batch_size` must be a positive "
        "integer, got -1",
        "Workflowfile:12:17, stage 'c', key 'inputs': no stage or file named `nope.txt`",
        "Workflowfile:13:5, stage 'c', key 'sampling': `sampling` applies to generate stages "
        "only",
    ]
    assert "  hint: did you mean `rows`?" in result.stderr


def test_json_lists_every_error_and_keeps_the_first_as_the_error(project: Project) -> None:
    project.write("Workflowfile", MANY)
    error = error_doc(project)
    places = [where(e) for e in error["errors"]]
    assert places == [(4, "a", "generate"), (5, "a", "num_records"), (9, "b", "batch_size"),
                      (12, "c", "inputs"), (13, "c", "sampling")]
    first = error["errors"][0]
    assert where(error) == where(first) and error["hint"] == first["hint"]
    assert error["message"] == first["message"]
    assert all(e["message"].startswith(f"Workflowfile:{e['line']}:") for e in error["errors"])
    assert "more_errors" not in error


def test_past_twenty_errors_the_rest_are_counted(project: Project) -> None:
    stages = "".join(f"  s{i}:\n    generate: code/stages.py:rows\n    num_records: 0\n"
                     for i in range(26))
    project.write("Workflowfile", "workflow: demo\nstages:\n" + stages)
    result = refused(project)
    assert result.stderr.count("must be a positive integer") == 20
    assert "and 6 more errors" in result.stderr
    error = error_doc(project)
    assert len(error["errors"]) == 20 and error["more_errors"] == 6
    assert [e["stage"] for e in error["errors"]] == [f"s{i}" for i in range(20)]


@pytest.mark.parametrize("text", [
    "workflow: demo\nstages:\n  a: {generate: x.py:f\n  b: 1\n",  # not YAML
    "- workflow: demo\n- stages: {}\n",  # not a mapping
    "",  # empty
])
def test_a_file_that_cannot_be_read_as_a_mapping_is_one_error(project: Project,
                                                               text: str) -> None:
    project.write("Workflowfile", text)
    error = error_doc(project)
    assert "errors" not in error and error["line"] is not None


@pytest.mark.parametrize(("text", "expected"), [
    # a misspelt required key: the typo, not also "missing required key"
    ("workflow: demo\nstage:\n  a: {run: x, outputs: [o]}\n", [(2, None, "stage")]),
    # a misspelt num_records: not also "needs num_records or a seed"
    ("workflow: demo\nstages:\n  a:\n    generate: code/stages.py:rows\n    num_recods: 3\n",
     [(5, "a", "num_recods")]),
    # a misspelt kind: not also "the stage has no kind"
    ("workflow: demo\nstages:\n  a:\n    generat: code/stages.py:rows\n    num_records: 3\n",
     [(4, "a", "generat")]),
    # a misspelt outputs: not also "a run stage needs outputs", nor `{outputs}` unchecked
    ("workflow: demo\nstages:\n  a:\n    run: echo > {outputs[0]}\n    outptus: [o]\n",
     [(5, "a", "outptus")]),
    # a wrong `params`: its placeholders are not checked against it
    ("workflow: demo\nstages:\n  a:\n    run: echo {params.x} > o\n    params: [x]\n"
     "    outputs: [o]\n", [(5, "a", "params")]),
    # a wrong default: once, not once per stage
    ("workflow: demo\ndefaults:\n  batch_size: 0\nstages:\n"
     "  a: {generate: code/stages.py:rows, num_records: 1}\n"
     "  b: {generate: code/stages.py:rows, num_records: 1}\n", [(3, None, "batch_size")]),
    # a default wrong for each stage it applies to: once
    ("workflow: demo\ndefaults:\n  inputs: [nope.txt]\nstages:\n"
     "  a: {generate: code/stages.py:rows, num_records: 1}\n"
     "  b: {generate: code/stages.py:rows, num_records: 1}\n", [(3, "a", "inputs")]),
])
def test_one_mistake_is_one_error(project: Project, text: str,
                                  expected: list[tuple[Any, ...]]) -> None:
    project.write("Workflowfile", text)
    error = error_doc(project)
    assert [where(e) for e in error.get("errors", [error])] == expected


def test_a_stage_given_twice_is_reported_and_the_others_still_checked(project: Project) -> None:
    project.write("Workflowfile", "workflow: demo\nstages:\n"
                  "  a: {generate: code/stages.py:rows, num_records: 1}\n"
                  "  a: {generate: code/stages.py:rows, num_records: 2}\n"
                  "  b: {generate: code/stages.py:rowz, num_records: 1}\n")
    error = error_doc(project)
    assert [where(e) for e in error["errors"]] == [(4, None, "a"), (5, "b", "generate")]
    assert "duplicate key `a`" in error["errors"][0]["message"]


def test_the_python_api_of_the_loader_raises_one_workflow_error_holding_all(
        tmp_path: Path) -> None:
    from buildtool.errors import WorkflowError, WorkflowErrors
    from buildtool.workflowfile import load_workflow

    project = Project(tmp_path)
    project.write("code/stages.py", STAGE_CODE)
    path = project.write("Workflowfile", MANY)
    with pytest.raises(WorkflowError) as info:
        load_workflow(path, "Workflowfile")
    assert isinstance(info.value, WorkflowErrors) and len(info.value.errors) == 5
    assert (info.value.line, info.value.key) == (4, "generate")
