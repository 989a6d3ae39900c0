"""A SyntaxError in a stage module points at the line of the user's file that does not parse,
not at dd-build's loader."""

from __future__ import annotations

from conftest import Project


def test_syntax_error_in_stage_module_points_at_its_line(project: Project) -> None:
    project.write("code/s.py", "def rows(ctx):\n    return [{'x': 1}]\n\ndef make(ctx)\n    pass\n")
    project.write("Workflowfile", """
workflow: demo
stages:
  g:
    generate: code/s.py:make
    num_records: 1
""")
    res = project.run("--json")
    assert res.code == 1, res.stderr
    stage = res.json()["stages"][0]
    assert stage["at"]["file"] == "code/s.py", stage["at"]
    assert stage["at"]["line"] == 4, stage["at"]
    assert "buildtool" not in stage["error"], stage["error"]
