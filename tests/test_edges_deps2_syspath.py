"""sys.path does not leak from one stage to the next, and `import util` finds the file the
stage's own sys.path names, as when the stage runs alone; every file still executes once, and
the discovered modules name the file actually used.
"""

from __future__ import annotations

from conftest import Project, find_reason

GEN = '''
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(HERE)
import util  # noqa: E402  (found through the folder just appended)

OTHER = os.path.join(os.path.dirname(HERE), "{other}")


def rows(ctx):
    return [{{"who": util.WHO, "leak": OTHER in sys.path}} for _ in range(ctx.size)]


def lazy(ctx):
    import lazymod  # only in this folder: found because this file put it on sys.path
    return [{{"who": util.WHO + lazymod.WHAT, "leak": OTHER in sys.path}}
            for _ in range(ctx.size)]
'''

UTIL = '''
from pathlib import Path

with open(Path(__file__).parent.parent / "imports.log", "a") as fh:
    fh.write("{who}\\n")
WHO = "{who}"
'''

FLOW = """
workflow: demo
stages:
  a:
    generate: sa/gen.py:rows
    num_records: 2
  b:
    generate: sb/gen.py:rows
    num_records: 2
  c:
    generate: sa/gen.py:lazy
    num_records: 2
"""


def _setup(project: Project) -> None:
    project.write("Workflowfile", FLOW)
    for mine, other in (("a", "b"), ("b", "a")):
        project.write(f"s{mine}/gen.py", GEN.format(other=f"s{other}"))
        project.write(f"s{mine}/util.py", UTIL.format(who=mine))
    project.write("sa/lazymod.py", "WHAT = '+lazy'\n")


def _row(project: Project, stage: str) -> tuple[str, bool]:
    row = project.table(stage).to_pylist()[0]
    return row["who"], row["leak"]


def test_each_stage_imports_the_util_its_own_sys_path_finds(project: Project) -> None:
    _setup(project)
    built = project.run()
    assert built.code == 0, built.stdout + built.stderr
    assert _row(project, "a") == ("a", False)
    assert _row(project, "b") == ("b", False)  # not a's util, and a's folder is gone
    assert _row(project, "c") == ("a+lazy", False)
    assert sorted((project.root / "imports.log").read_text().split()) == ["a", "b"]  # once
    assert set(project.record("a")["discovered"]) == {"sa/util.py"}
    assert set(project.record("b")["discovered"]) == {"sb/util.py"}
    assert set(project.record("c")["discovered"]) == {"sa/util.py", "sa/lazymod.py"}

    project.write("sb/util.py", UTIL.format(who="b2"))
    built = project.run("--json")
    actions = {s["stage"]: s["action"] for s in built.json()["stages"]}
    assert actions == {"a": "up_to_date", "b": "run", "c": "up_to_date"}
    assert find_reason(built.stage("b"), "code_changed")["file"] == "sb/util.py"
    assert _row(project, "b") == ("b2", False)


def test_a_stage_alone_gives_what_the_full_build_gives(project: Project) -> None:
    _setup(project)
    assert project.run("b").code == 0
    alone = _row(project, "b")
    assert project.run("--force", "b").code == 0
    assert _row(project, "b") == alone == ("b", False)
