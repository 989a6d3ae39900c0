"""An exception of user code whose `str()` itself raises fails its stage (exit 1), as Python's
own traceback prints it; it is no internal error of dd-build (exit 70)."""

from __future__ import annotations

from conftest import Project

BAD_STR = '''
class Bad(Exception):
    def __str__(self):
        raise RuntimeError("str broke")

def make(ctx):
    raise Bad()

def join(ctx):
    raise Bad()

def keep(ctx):
    raise Bad()

def rows(ctx):
    return [{"x": ctx.offset}]
'''


def test_exception_whose_str_raises_fails_the_stage_not_dd_build(project: Project) -> None:
    project.write("code/s.py", BAD_STR)
    project.write("Workflowfile", """
workflow: demo
stages:
  g:
    generate: code/s.py:make
    num_records: 1
  t:
    transform: code/s.py:join
    inputs: [ok]
  ok:
    generate: code/s.py:rows
    num_records: 1
  cb:
    generate: code/s.py:rows
    num_records: 1
    on_success: code/s.py:keep
""")
    res = project.run("--json", "-k")
    assert res.code == 1, res.stderr  # a stage failed; not 70, an internal error
    doc = res.json()
    for name in ("g", "t", "cb"):
        stage = doc["stages"][[s["stage"] for s in doc["stages"]].index(name)]
        assert stage["result"] == "failed", stage
        assert "Bad: <exception str() failed>" in stage["error"], stage["error"]
        assert "internal error" not in stage["error"]
        assert stage["at"]["file"] == "code/s.py", stage

