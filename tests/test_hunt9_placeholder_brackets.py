"""`{inputs[NAME]}` names a glob input as written, and a glob may hold `[...]`
(`data/x[0-9].txt`): the placeholder expands to the files it matches, and a misspelt one is
refused when the Workflowfile is read, never handed to the shell as it is."""

from __future__ import annotations

from conftest import Project

WORKFLOW = """
workflow: demo
stages:
  r:
    run: "cat {inputs[data/x[0-9].txt]} {inputs[data/my file.txt]} > {outputs}"
    inputs: ["data/x[0-9].txt", "data/my file.txt"]
    outputs: [out.txt]
"""


def test_glob_with_brackets_expands_by_name(project: Project) -> None:
    project.write("data/x1.txt", "one\n")
    project.write("data/x2.txt", "two\n")
    project.write("data/my file.txt", "three\n")
    project.write("Workflowfile", WORKFLOW)
    res = project.run()
    assert res.code == 0, res.stderr
    assert (project.root / "out.txt").read_text() == "one\ntwo\nthree\n"


def test_misspelt_glob_with_brackets_is_refused_at_load(project: Project) -> None:
    project.write("data/x1.txt", "one\n")
    project.write("data/my file.txt", "three\n")
    project.write("Workflowfile", WORKFLOW.replace("{inputs[data/x[0-9]", "{inputs[data/y[0-9]"))
    res = project.run("--json")
    assert res.code == 2, res.stderr
    error = res.json()["error"]
    assert error["key"] == "run" and "data/y[0-9].txt" in error["message"], error
    assert not (project.root / "out.txt").exists()
