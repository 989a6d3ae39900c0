"""Small hard edges (issue 7): errors that named the stage twice, `--version --json`, and values
pyarrow cannot convert named by column, row and Python type."""

from __future__ import annotations

import json

import pytest
from conftest import Project

from buildtool import __version__

WORKFLOW = """
workflow: demo
stages:
  s1:
    generate: code/stages.py:rows
    num_records: 2
  s2:
    generate: code/stages.py:rows
    seed: s1
  notes:
    run: echo hi > {outputs}
    outputs: [notes.md]
"""


@pytest.mark.parametrize("args", [("show", "s2"), ("export", "s2", "s2.csv"),
                                  ("override", "s2", "s2.parquet")])
def test_a_stage_with_no_output_is_named_once(project: Project, args: tuple[str, ...]) -> None:
    project.write("Workflowfile", WORKFLOW)
    for _ in range(2):  # never built; then failed
        result = project.run(*args)
        assert result.code == 2, result.stderr
        assert result.stderr.count("'s2'") == 1, result.stderr
        assert "stage 's2': no output yet" in result.stderr
        assert project.run("s2", FAIL_AT="s2:0").code == 1


def test_a_stage_with_no_table_is_named_once(project: Project) -> None:
    project.write("Workflowfile", WORKFLOW)
    assert project.run("notes").code == 0
    result = project.run("show", "notes", "--json")
    assert result.code == 2
    assert result.stderr.count("'notes'") == 1, result.stderr
    error = result.json()["error"]
    assert error["stage"] == "notes" and error["message"].startswith("stage 'notes': no tabular")


@pytest.mark.parametrize("args", [("--version", "--json"), ("--json", "--version"),
                                  ("--jso", "--version"), ("show", "--version", "--json"),
                                  ("status", "--json", "--version")])
def test_version_with_json_prints_a_document(project: Project, args: tuple[str, ...]) -> None:
    result = project.run(*args)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout) == {"ok": True, "version": __version__}


def test_version_without_json_prints_text(project: Project) -> None:
    result = project.run("--version")
    assert result.code == 0 and result.stdout == f"dd-build {__version__}\n"


UUIDS = '''
import uuid

def top(ctx):
    return [{"id": 0, "u": None}, {"id": 1, "u": uuid.UUID(int=7)}]

def nested(ctx):
    return [{"id": 0, "s": {"v": 1, "tags": [{"u": uuid.UUID(int=7)}]}}]
'''


@pytest.mark.parametrize(("fn", "expected"), [
    ("top", "column 'u': row 1 holds a value of type uuid.UUID, which pyarrow cannot convert"),
    ("nested", "column 's': row 0 holds a value of type uuid.UUID at tags[0].u, which pyarrow "
               "cannot convert"),
])
def test_an_unconvertible_value_is_named_by_column_row_and_type(project: Project, fn: str,
                                                                 expected: str) -> None:
    project.write("code/uuids.py", UUIDS)
    project.write("Workflowfile", f"""
workflow: demo
stages:
  g:
    generate: code/uuids.py:{fn}
    num_records: 1
""")
    result = project.run("--json")
    assert result.code == 1, result.stderr
    error = result.stage("g")["error"]
    assert "code/uuids.py:" + fn + " (batch 0)" in error
    assert expected in error, error
