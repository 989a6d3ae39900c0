"""`package.module:function` names what Python imports: a package folder (`mylib/__init__.py`)
comes before a module file of the same name (`mylib.py`). The check at load must not refuse a
function the package defines, and the package's file is the stage's code."""

from __future__ import annotations

from conftest import Project

WORKFLOW = """
workflow: demo
stages:
  a:
    generate: mylib:make
    num_records: 2
    batch_size: 1
"""


def test_package_shadows_module_file_of_same_name(project: Project) -> None:
    project.write("Workflowfile", WORKFLOW)
    project.write("mylib.py", "def other(ctx):\n    return [{'x': -1}]\n")
    project.write("mylib/__init__.py", "def make(ctx):\n    return [{'x': ctx.offset}]\n")
    res = project.run("--json")
    assert res.code == 0, res.stderr
    assert project.table("a").column("x").to_pylist() == [0, 1]

    # an edit of the package (the code that ran) reruns the stage; of the shadowed file, not
    project.write("mylib.py", "def other(ctx):\n    return [{'x': -2}]\n")
    assert project.run("--json").stage("a")["action"] == "up_to_date"
    project.write("mylib/__init__.py", "def make(ctx):\n    return [{'x': ctx.offset + 10}]\n")
    assert project.run("--json").stage("a")["action"] == "run"
    assert project.table("a").column("x").to_pylist() == [10, 11]
