"""Each project module, and each stage file, executes once per dd-build process; what a stage
imports is still discovered, from the import edges project code makes (cached or not).

The regression: dropping the project's modules before every stage made a module with a
one-time global effect (a pyarrow extension type registered at import) fail the second stage.
"""

from __future__ import annotations

from conftest import Project, find_reason

EXTTYPES = '''
from pathlib import Path

import pyarrow as pa

with open(Path(__file__).parent / "imports.log", "a") as fh:
    fh.write("exttypes\\n")


class UuidType(pa.ExtensionType):
    def __init__(self):
        super().__init__(pa.binary(16), "example.uuid")

    def __arrow_ext_serialize__(self):
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type, serialized):
        return cls()


pa.register_extension_type(UuidType())
TAG = "t1"
'''

ROWS = '''
def rows(ctx):
    return [{"i": ctx.offset + i, "tag": TAG} for i in range(ctx.size)]
'''

TWO = """
workflow: demo
stages:
  a:
    generate: stages/a.py:rows
    num_records: 2
  b:
    generate: stages/b.py:rows
    num_records: 2
"""


def _imports(project: Project) -> list[str]:
    log = project.root / "imports.log"
    return log.read_text().splitlines() if log.exists() else []


def test_a_module_with_a_one_time_effect_imported_by_two_stages(project: Project) -> None:
    project.write("Workflowfile", TWO)
    project.write("exttypes.py", EXTTYPES)
    project.write("stages/a.py", "import exttypes\n\nTAG = exttypes.TAG\n" + ROWS)
    project.write("stages/b.py", "from exttypes import TAG\n" + ROWS)
    built = project.run()
    assert built.code == 0, built.stdout + built.stderr
    assert _imports(project) == ["exttypes"]  # executed once in the build's process
    for stage in ("a", "b"):
        assert project.record(stage)["discovered"]["exttypes.py"]["by"] == f"stages/{stage}.py"
        assert set(project.table(stage).column("tag").to_pylist()) == {"t1"}

    project.write("exttypes.py", EXTTYPES.replace("t1", "t2"))
    explain = project.run("--explain", "-n")
    assert "code file exttypes.py changed (imported by stages/b.py)" in explain.stdout
    built = project.run("--json")
    assert built.code == 0, built.stderr
    for stage in ("a", "b"):
        st = built.stage(stage)
        assert st["result"] == "completed"
        assert find_reason(st, "code_changed")["imported_by"] == f"stages/{stage}.py"
        assert set(project.table(stage).column("tag").to_pylist()) == {"t2"}


SHARED_FILE = '''
from pathlib import Path

import helper

with open(Path(__file__).parent.parent / "imports.log", "a") as fh:
    fh.write("all.py\\n")


def rows(ctx):
    return [{"i": ctx.offset + i, "w": helper.WORD} for i in range(ctx.size)]


def more(ctx):
    return [{"i": ctx.offset + i, "w": helper.WORD + "!"} for i in range(ctx.size)]


def done(ctx):
    (Path(ctx.out_dir).parent / "done.txt").write_text(helper.WORD)
'''

SHARED = """
workflow: demo
stages:
  x:
    generate: stages/all.py:rows
    num_records: 2
    on_success: stages/all.py:done
  y:
    generate: stages/all.py:more
    num_records: 2
  z:
    generate: stages/all.py:rows
    num_records: 2
"""


def test_a_stage_file_named_by_several_stages_executes_once(project: Project) -> None:
    """Three stages and a callback name one file: it and its helper execute once, and every
    stage lists the helper the file imported when it first executed."""
    project.write("Workflowfile", SHARED)
    project.write("stages/all.py", SHARED_FILE)
    project.write("helper.py", "from pathlib import Path\n\n"
                               "with open(Path(__file__).parent / 'imports.log', 'a') as fh:\n"
                               "    fh.write('helper\\n')\n\nWORD = 'one'\n")
    built = project.run()
    assert built.code == 0, built.stdout + built.stderr
    assert sorted(_imports(project)) == ["all.py", "helper"]
    for stage in ("x", "y", "z"):
        assert project.record(stage)["discovered"]["helper.py"]["by"] == "stages/all.py"

    text = (project.root / "helper.py").read_text().replace("'one'", "'two'")
    project.write("helper.py", text)
    built = project.run("--json")
    assert built.code == 0, built.stderr
    assert {s["stage"]: s["result"] for s in built.json()["stages"]} == \
        {"x": "completed", "y": "completed", "z": "completed"}
    assert (project.artifacts / "x" / "done.txt").read_text() == "two"
    assert set(project.table("y").column("w").to_pylist()) == {"two!"}


FIRST = '''
import pkg.sub

def rows(ctx):
    return [{"w": pkg.sub.WORD} for _ in range(ctx.size)]
'''

SECOND = '''
import importlib

def rows(ctx):
    from pkg import sub  # a module already imported by the first stage: a cached import
    other = importlib.import_module("pkg.other")
    return [{"w": sub.WORD + other.WORD} for _ in range(ctx.size)]
'''

CACHED = """
workflow: demo
stages:
  first:
    generate: stages/first.py:rows
    num_records: 2
  second:
    generate: stages/second.py:rows
    num_records: 2
    inputs: [first]
"""


def test_cached_and_indirect_imports_are_discovered(project: Project) -> None:
    """`from pkg import sub` of a module another stage executed, and importlib.import_module
    inside the function, are edges of the stage that runs them."""
    project.write("Workflowfile", CACHED)
    project.write("stages/first.py", FIRST)
    project.write("stages/second.py", SECOND)
    project.write("pkg/__init__.py", "")
    project.write("pkg/sub.py", "WORD = 's'\n")
    project.write("pkg/other.py", "WORD = 'o'\n")
    assert project.run().code == 0
    found = project.record("second")["discovered"]
    assert {k: v["by"] for k, v in found.items()} == {
        "pkg/__init__.py": "stages/second.py", "pkg/sub.py": "stages/second.py",
        "pkg/other.py": "stages/second.py"}
    assert set(project.record("first")["discovered"]) == {"pkg/__init__.py", "pkg/sub.py"}

    project.write("pkg/other.py", "WORD = 'p'\n")
    built = project.run("--json")
    assert built.stage("first")["action"] == "up_to_date"
    st = built.stage("second")
    assert st["result"] == "completed"
    assert find_reason(st, "code_changed")["message"] == \
        "code file pkg/other.py changed (imported by stages/second.py)"
    assert set(project.table("second").column("w").to_pylist()) == {"sp"}
